"""Dead runs' staging views are swept at the start of the next run,
and what they held is kept; 10 random kills of warms leave no staging behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import DODO, Workspace, make_entry, model_file
from tasks.runner import staging


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_runs_views_are_published_and_removed_a_live_runs_kept(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    base = ws.root / "jitwarm" / "staging"
    now = int(time.time() * 1000)
    dead = base / f"pool-{staging.HOST}-{dead_pid()}-{now}"
    make_entry(dead / "view-0", "kernel.left.0123456789abcdef")  # a replay built it, then the run died
    dead_fallback = base / f"fallback-{staging.HOST}-{dead_pid()}-{now}"
    make_entry(dead_fallback, "kernel.server.0123456789abcdef")
    live = base / f"pool-{staging.HOST}-{os.getpid()}-{now}"
    other_host = base / f"pool-elsewhere-{dead_pid()}-{now}"
    for path in (live, other_host):
        path.mkdir(parents=True)
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in base.iterdir()) == sorted([live.name, other_host.name])
    for name in ("kernel.left.0123456789abcdef", "kernel.server.0123456789abcdef"):
        assert (ws.root / "cache" / name / "kernel.cubin").is_file(), name


def test_a_pid_taken_by_a_later_process_counts_as_dead():
    assert staging._dead(f"pool-{staging.HOST}-{os.getpid()}-1000")  # this process started after 1970
    assert not staging._dead(f"pool-{staging.HOST}-{os.getpid()}-{int(time.time() * 1000)}")
    assert not staging._dead("notes") and not staging._dead(f"pool-{staging.HOST}-x-1")


def _files(root) -> dict[str, int]:
    # The parse memo is a cache of the registry (tasks/plan/parsememo.py), written by any second run.
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and p.name != "registry.msgpack"}


@pytest.mark.parametrize("layout", ["0.1.x", "0.2.x"])
def test_ten_random_kills_and_interrupts_then_a_warm_leave_the_root_as_one_clean_warm(tmp_path, layout):
    # Regression: killed builds left tmp/<pid>-<uuid> (0.1.x) or tmp/<uuid> (0.2.x) behind, 2-4 a kill.
    (tmp_path / "killed").mkdir()
    (tmp_path / "clean").mkdir()
    ws = Workspace(tmp_path / "killed", layout)
    clean = Workspace(tmp_path / "clean", layout)
    for w in (ws, clean):
        model_file(w.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    for w in (ws, clean):
        w.env["JITWARM_KERNEL_QUEUE"] = "on"  # kills land in its compiles and hand-offs too
    env = {**ws.env, "FAKE_DG_COMPILE_S": "0.3"}
    reference = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=clean.tmp,
                                 env={**clean.env, "FAKE_DG_COMPILE_S": "0.3"}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # the clean warm, meanwhile
    rng = random.Random(16)
    for i in range(10):
        warm = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.3, 1.1))
        os.killpg(warm.pid, signal.SIGKILL if i % 2 else signal.SIGINT)
        try:
            warm.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(warm.pid, signal.SIGKILL)
            warm.wait(timeout=10)
    time.sleep(1)  # the pools die with their runs (test_orphans)
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    base = ws.root / "jitwarm" / "staging"
    assert not base.exists() or list(base.iterdir()) == []
    assert set(ws.status().values()) == {"U"}
    assert not (ws.root / "tmp").exists() or list((ws.root / "tmp").iterdir()) == []
    output, _ = reference.communicate(timeout=120)
    assert reference.returncode == 0, output
    killed, fresh = _files(ws.root), _files(clean.root)
    assert sorted(killed) == sorted(fresh)
    assert sorted(p for p in killed if p.startswith("cache/")) == sorted(p for p in fresh if p.startswith("cache/"))
    # Records hold timings, and the stand-ins' binaries their builder's pid: the same files, sizes within 1%.
    # The last run's logs are left out: each run rewrites them, with what its own workers did.
    killed, fresh = ({p: n for p, n in files.items() if not p.startswith("jitwarm/logs/")} for files in (killed, fresh))
    assert abs(sum(killed.values()) - sum(fresh.values())) <= sum(fresh.values()) / 100
