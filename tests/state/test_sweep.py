"""What a start-of-run sweep may take out of <root>/tmp and the shim's stores (tasks/state/sweep.py)."""

import os
import subprocess
import sys
import time

from tasks.state import sweep


def _dir(root, name, age_s=0.0):
    path = root / "tmp" / name
    path.mkdir(parents=True)
    (path / "kernel.cu").write_text("// x\n")
    then = time.time() - age_s
    for p in (path / "kernel.cu", path):
        os.utime(p, (then, then))
    return path


def test_a_dead_builds_directory_goes_and_one_newer_than_the_run_stays(tmp_path):
    dead = _dir(tmp_path, "12345-aa", age_s=5)
    mine = _dir(tmp_path, "0f0f0f0f")  # made after this run started: not a leftover
    assert sweep.sweep_tmp(tmp_path, started=time.time() - 1, stale_s=3600) == 1
    assert not dead.exists() and mine.exists()


def test_a_live_process_working_in_it_or_naming_the_root_keeps_it(tmp_path):
    busy = _dir(tmp_path, "busybusy", age_s=5)
    named = _dir(tmp_path, "namednamed", age_s=5)
    nobody = _dir(tmp_path, "nobody", age_s=5)
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    in_it = subprocess.Popen(sleeper, cwd=busy)  # nvcc runs as `cd <tmp> && nvcc ...`
    # A builder (an sglang server, another warm) started before the directory last changed.
    os.utime(named, (time.time(), time.time()))
    os.utime(named / "kernel.cu", (time.time() - 5, time.time() - 5))
    time.sleep(0.05)
    builder = subprocess.Popen(sleeper, env={**os.environ, "DG_JIT_CACHE_DIR": str(tmp_path)})
    try:
        time.sleep(0.3)
        os.utime(named, (time.time() - 0.1, time.time() - 0.1))  # touched after the builder started
        kept = set(sweep.leftovers(tmp_path, started=time.time(), stale_s=3600))
        assert kept == {nobody}
    finally:
        for proc in (in_it, builder):
            proc.kill()
            proc.wait()
    assert set(sweep.leftovers(tmp_path, started=time.time(), stale_s=3600)) == {busy, named, nobody}


def test_anything_untouched_for_longer_than_any_build_goes_whoever_names_the_root(tmp_path):
    old = _dir(tmp_path, "ancient", age_s=7200)
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                               env={**os.environ, "DG_JIT_CACHE_DIR": str(tmp_path)})
    try:
        time.sleep(0.2)
        assert sweep.leftovers(tmp_path, started=time.time(), stale_s=3600) == [old]
    finally:
        builder.kill()
        builder.wait()


def test_other_toolchains_stores_go_once_untouched_and_the_current_one_stays(tmp_path):
    kstore = tmp_path / "kstore"
    current, recent, stale = kstore / "aaaa", kstore / "bbbb", kstore / "cccc"
    for store in (current, recent, stale):
        store.mkdir(parents=True)
        (store / "k.cubin").write_bytes(b"\x7fELF")
        (store / "k.lock").write_text("")
    old = time.time() - 7200
    for p in (*stale.iterdir(), stale, *current.iterdir(), current):
        os.utime(p, (old, old))
    assert sweep.sweep_stores(kstore, keep=current, stale_s=3600) == 1
    assert sorted(p.name for p in kstore.iterdir()) == ["aaaa", "bbbb"]


def test_the_current_store_loses_old_locks_dead_shims_copies_and_a_stale_log(tmp_path):
    from tasks.runner import pool

    fp = {"toolchain": "x"}
    store = pool.store_for(tmp_path, fp, max_age_s=3600)  # made, and found writable
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 7200
    (store / "old.lock").write_text("")
    os.utime(store / "old.lock", (old, old))
    (store / "new.lock").write_text("")
    (store / f".k1.{dead.pid}").write_bytes(b"half")  # the shim's copy before its rename, its shell killed
    (store / f".k2.{os.getpid()}").write_bytes(b"half")  # a live shim's
    (store / "compiled.log").write_text(f"k1 {old} {old + 1} 1\n")
    assert pool.store_for(tmp_path, fp, max_age_s=3600) == store
    assert sorted(p.name for p in store.iterdir()) == [f".k2.{os.getpid()}", "new.lock"]
