"""Issue 16, item 2: dead runs' staging views are swept at the start of the next run,
and what they held is kept; 10 random kills of warms leave no staging behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from conftest import DODO, make_entry, model_file
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


def test_ten_random_kills_then_a_warm_leave_no_staging_and_everything_up_to_date(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    env = {**ws.env, "FAKE_DG_COMPILE_S": "0.3"}
    rng = random.Random(16)
    for _ in range(10):
        warm = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.5, 3.0))
        os.killpg(warm.pid, signal.SIGKILL)
        warm.wait(timeout=10)
    time.sleep(1)  # the pools die with their runs (test_orphans)
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    base = ws.root / "jitwarm" / "staging"
    assert not base.exists() or list(base.iterdir()) == []
    assert set(ws.status().values()) == {"U"}
