"""The kernel queue (tasks/runner/kernel_queue.py) with the nvcc shim, and kernel recipes
(tasks/state/recipes.py): a worker's new kernel is handed over, not compiled in its way;
known kernels compile longest first; a failure or a kill leaves nothing behind."""

from __future__ import annotations

import heapq
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import FAKES, REPO
from tasks.runner import kernel_queue, pool
from tasks.state import builds, recipes

SOURCE = "// entry: k.1\nkernel\n"


def shim(tmp_path, build: str, env: dict, source: str = SOURCE) -> subprocess.CompletedProcess:
    """deep_gemm 0.1.x's call: `cd <build> && <shim> <build>/kernel.cu -cubin -o <build>/kernel.cubin ...`."""
    where = tmp_path / build
    where.mkdir(exist_ok=True)
    (where / "kernel.cu").write_text(source)
    argv = [str(pool.SHIM), str(where / "kernel.cu"), "-cubin", "-o", str(where / "kernel.cubin"), "-O3",
            "--gpu-architecture=sm_90a"]
    return subprocess.run(f"cd {shlex.quote(str(where))} && {shlex.join(argv)}", shell=True, env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "JITWARM_REAL_NVCC": str(FAKES / "fake_nvcc"),
            "JITWARM_KSTORE": str(tmp_path / "store"), "FAKE_DG_COMPILE_LOG": str(tmp_path / "compiles.log"),
            "JITWARM_BUSY_FLAG": str(tmp_path / "busy"), "JITWARM_RECIPES": str(tmp_path / "recipes"),
            "JITWARM_NVCC_QUEUE": str(tmp_path / "queue"), "JITWARM_NVCC_WAIT": "0"}


def compiles(tmp_path) -> list[str]:
    log = tmp_path / "compiles.log"
    return log.read_text().split() if log.exists() else []


def queue_for(tmp_path, env, slots: int = 2) -> kernel_queue.KernelQueue:
    (tmp_path / "store").mkdir(exist_ok=True)
    return kernel_queue.KernelQueue(tmp_path / "store", tmp_path / "queue", tmp_path / "recipes", env, slots, 4242)


def wait_for(predicate, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_new_kernel_goes_to_the_queue_and_the_worker_hears_busy_at_once(tmp_path, env):
    (tmp_path / "queue").mkdir()
    first = shim(tmp_path, "tmp-a", env)
    assert first.returncode == 75 and "queued for the compile queue" in first.stderr
    key = (tmp_path / "busy").read_text().strip()
    request = tmp_path / "queue" / key
    assert (request / "kernel.cu").read_text() == SOURCE
    assert recipes.read_argv(request) == ["@SRC@", "-cubin", "-o", "@OUT@", "-O3", "--gpu-architecture=sm_90a"]
    again = shim(tmp_path, "tmp-b", env)  # another build directory, the same kernel: one request
    assert again.returncode == 75 and [p.name for p in (tmp_path / "queue").iterdir()] == [key]
    assert compiles(tmp_path) == []  # nothing compiled in the worker's way
    waited = shim(tmp_path, "tmp-c", {**env, "JITWARM_NVCC_WAIT": "1"})  # the end of a run: it compiles itself
    assert waited.returncode == 0 and compiles(tmp_path) == ["k.1"]


def test_the_queue_compiles_a_request_as_the_shim_would_and_records_its_recipe(tmp_path, env):
    (tmp_path / "queue").mkdir()
    queue = queue_for(tmp_path, env)
    queue.start()
    try:
        assert shim(tmp_path, "tmp-a", env).returncode == 75
        key = (tmp_path / "busy").read_text().strip()
        wait_for(lambda: builds.stored_ok(tmp_path / "store", key))
    finally:
        queue.stop()
    note = queue.note()
    assert note.pop("seconds") > 0 and note == {"compiled": 1, "known": 0, "known_compiled": 0, "failed": 0}
    retry = shim(tmp_path, "tmp-b", env)  # the worker's retry finds it stored: a copy, no compile
    assert retry.returncode == 0 and compiles(tmp_path) == ["k.1"]
    assert (tmp_path / "tmp-b" / "kernel.cubin").read_text() == "CUBIN\n" + SOURCE
    digest = builds.file_digest(tmp_path / "store" / f"{key}.cubin")
    (found,) = recipes.for_digests(tmp_path / "recipes", {digest})
    assert found.key == key and (found.path / "kernel.cu").read_text() == SOURCE
    log = (tmp_path / "store" / "compiled.log").read_text().split()
    assert log[0] == key and log[3] == "4242"  # the run it is counted for (tasks/state/builds.py)


def test_known_kernels_compile_longest_first(tmp_path, env):
    for name, seconds in (("k.short", 1), ("k.long", 3), ("k.mid", 2)):
        where = tmp_path / "recipes" / name
        where.mkdir(parents=True)
        (where / "kernel.cu").write_text(f"// entry: {name}\n")
        (where / "argv").write_bytes(b"\0".join([b"@SRC@", b"-cubin", b"-o", b"@OUT@"]) + b"\0")
        (where / "seconds").write_text(f"100 {100 + seconds}\n")
        (where / "digests").write_text(f"d-{name}\n")
    found = recipes.for_digests(tmp_path / "recipes", {"d-k.short", "d-k.long", "d-k.mid", "unknown"})
    assert [r.key for r in found] == ["k.long", "k.mid", "k.short"]
    queue = queue_for(tmp_path, env, slots=1)
    queue.submit_known(found)
    queue.start()
    try:
        wait_for(lambda: len(queue.compiled) == 3)
    finally:
        queue.stop()
    assert compiles(tmp_path) == ["k.long", "k.mid", "k.short"]
    assert queue.note()["known_compiled"] == 3


def test_kernels_the_workers_find_compile_by_their_guessed_time_when_none_is_known(tmp_path, env):
    gemm = "static void __instantiate_kernel() {{ auto ptr = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<\n" \
           "cute::UMMA::Major::K, 0, 0, 0, 1, {}, {}, 128>); }};\n"
    queue_dir = tmp_path / "queue"
    for name, tile in (("k.small", (16, 16)), ("k.big", (128, 192)), ("k.mid", (64, 64))):
        (queue_dir / name).mkdir(parents=True)
        (queue_dir / name / "kernel.cu").write_text(f"// entry: {name}\n" + gemm.format(*tile))
        (queue_dir / name / "argv").write_bytes(b"\0".join([b"@SRC@", b"-cubin", b"-o", b"@OUT@"]) + b"\0")
    queue = queue_for(tmp_path, env, slots=1)
    watch = threading.Thread(target=queue._watch, daemon=True)  # no compile slot yet: the heap keeps all three
    watch.start()
    try:
        wait_for(lambda: len(queue.seen) == 3)
        assert [heapq.heappop(queue.heap)[2] for _ in range(3)] == ["k.big", "k.mid", "k.small"]
    finally:
        queue.stop()
        watch.join(timeout=5)


def test_a_compile_that_fails_in_the_queue_is_left_to_the_worker(tmp_path, env):
    (tmp_path / "queue").mkdir()
    queue = queue_for(tmp_path, {**env, "JITWARM_REAL_NVCC": "/bin/false"})
    queue.start()
    try:
        assert shim(tmp_path, "tmp-a", env).returncode == 75
        wait_for(lambda: queue.failed)
    finally:
        queue.stop()
    key = (tmp_path / "busy").read_text().strip()
    assert not (tmp_path / "store" / f"{key}.cubin").exists()
    # Its lock is free: the worker's last try compiles it, and reports nvcc's own error if it fails.
    failing = shim(tmp_path, "tmp-b", {**env, "JITWARM_NVCC_WAIT": "1", "JITWARM_REAL_NVCC": "/bin/false"})
    assert failing.returncode == 1


def test_a_killed_run_takes_the_queue_s_nvcc_with_it(tmp_path, env):
    (tmp_path / "queue").mkdir()
    assert shim(tmp_path, "tmp-a", env).returncode == 75
    script = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path\n"
              "from tasks.runner import kernel_queue\n"
              f"q = kernel_queue.KernelQueue(Path({str(tmp_path / 'store')!r}), Path({str(tmp_path / 'queue')!r}), "
              f"Path({str(tmp_path / 'recipes')!r}), {env | {'FAKE_DG_COMPILE_S': '60'}!r}, 2, 1)\n"
              "q.start(); time.sleep(120)\n")
    host = subprocess.Popen([sys.executable, "-c", script])

    def nvcc() -> list[psutil.Process]:
        return [p for p in psutil.Process(host.pid).children(recursive=True) if "fake_nvcc" in _cmdline(p)]

    # The stand-in's own child (its sleep, as nvcc's cicc and ptxas) has started: a loaded machine takes a while.
    wait_for(lambda: any(p.children() for p in nvcc()))
    tree = psutil.Process(host.pid).children(recursive=True)
    assert len(tree) >= 2
    os.kill(host.pid, signal.SIGKILL)
    host.wait(timeout=10)

    def gone(proc: psutil.Process) -> bool:
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(p) for p in tree), seconds=10)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # a short-lived child already gone, or a zombie (a loaded machine)
        return ""


def test_prune_drops_unused_recipes_and_dead_writers_scratch(tmp_path):
    base = tmp_path / "recipes"
    for name in ("old", "fresh", f".k.{os.getpid()}", ".k.999999999"):
        (base / name).mkdir(parents=True)
    os.utime(base / "old", (1, 1))
    assert recipes.prune(base) == 2
    assert sorted(p.name for p in base.iterdir()) == [f".k.{os.getpid()}", "fresh"]


def test_the_shim_records_what_it_compiles_itself(tmp_path, env):
    env = {**env, "JITWARM_NVCC_WAIT": "1"}
    assert shim(tmp_path, "tmp-a", env).returncode == 0
    (key,) = [p.name for p in (tmp_path / "recipes").iterdir()]
    stored = (tmp_path / "store" / f"{key}.sha256").read_text().split()[0]
    assert (tmp_path / "recipes" / key / "digests").read_text().split() == [stored]
    assert recipes.expected_seconds(tmp_path / "recipes", key) >= 0 and \
        recipes.read_argv(tmp_path / "recipes" / key)[0] == "@SRC@"
    for name in ("store",):  # the store lost: a recompile adds its cubin's digest to the same recipe
        for path in (tmp_path / name).glob(f"{key}.*"):
            path.unlink()
    assert shim(tmp_path, "tmp-b", env).returncode == 0
    assert len((tmp_path / "recipes" / key / "digests").read_text().split()) == 2
    assert Path(tmp_path / "recipes").is_dir() and not list((tmp_path / "recipes").glob(".*"))


def test_stop_ends_a_compile_no_worker_waits_for(tmp_path, env):
    (tmp_path / "queue").mkdir()
    assert shim(tmp_path, "tmp-a", env).returncode == 75
    queue = queue_for(tmp_path, {**env, "FAKE_DG_COMPILE_S": "60"})
    queue.start()
    wait_for(lambda: queue.running)
    (proc,) = queue.running
    began = time.monotonic()
    queue.stop()
    assert time.monotonic() - began < 5 and proc.poll() is not None
    assert queue.note()["compiled"] == 0 and not list((tmp_path / "store").glob("*.cubin"))


def test_the_queue_is_idle_only_once_a_landed_kernel_has_been_reported(tmp_path, env):
    """Stub discovery lets every replay go once the queue is idle: a compile whose result is still
    being handed to on_done (its entries not yet written) must keep it busy."""
    reporting, release = threading.Event(), threading.Event()

    def on_done(key, stored):
        reporting.set()
        release.wait(10)

    queue = queue_for(tmp_path, env)
    queue.on_done = on_done
    queue.start()
    try:
        assert queue.idle()
        assert shim(tmp_path, "tmp-a", env).returncode == 75  # requested, and "busy"
        wait_for(reporting.is_set)
        assert not queue.idle(), "idle while a landed kernel was still being reported"
        release.set()
        wait_for(queue.idle)
        assert len(queue.compiled) == 1
    finally:
        release.set()
        queue.stop()
