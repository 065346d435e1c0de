"""The supervisor ends every descendant, on every path, and nothing else."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tasks.runner import supervise

SPAWN = """
import os, signal, subprocess, sys, time
pidfile = sys.argv[1]
# A grandchild in its own session that ignores SIGTERM.
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
g = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
open(pidfile, "w").write(str(g.pid))
print("spawned", g.pid, flush=True)
mode = sys.argv[2]
if mode == "hang":
    time.sleep(600)
elif mode == "exit":
    sys.exit(0)
elif mode == "crash":
    print("CUDA error: out of memory", flush=True)
    os.abort()
"""


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(supervise, "GRACE_S", 0.5)


def run(tmp_path, mode, timeout=30):
    pidfile = tmp_path / "grandchild.pid"
    outcome = supervise.run([sys.executable, "-c", SPAWN, str(pidfile), mode], env=None,
                            log=tmp_path / "log", timeout=timeout)
    return outcome, int(pidfile.read_text())


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("mode", ["exit", "crash"])
def test_no_descendant_outlives_a_finished_child(tmp_path, mode):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        outcome, grandchild = run(tmp_path, mode)
        assert gone(grandchild)
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()
    if mode == "crash":
        assert outcome.describe() == "killed by SIGABRT"
        assert "CUDA error: out of memory" in outcome.tail()
    else:
        assert outcome.returncode == 0 and outcome.tail()[0].startswith("spawned")


def test_timeout_ends_the_whole_tree(tmp_path):
    started = time.monotonic()
    outcome, grandchild = run(tmp_path, "hang", timeout=1.5)
    assert outcome.timed_out and outcome.describe().startswith("timed out")
    assert gone(grandchild)
    assert time.monotonic() - started < 10


def test_tail_of_a_large_log(tmp_path):
    code = "import sys\nfor i in range(20000): print('line', i)\n"
    outcome = supervise.run([sys.executable, "-c", code], env=None, log=tmp_path / "log", timeout=30)
    assert outcome.tail(3) == ["line 19997", "line 19998", "line 19999"]


def test_failure_line_ends_the_run_early_with_children_still_running(tmp_path):
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "time.sleep(0.5)\n"
            "print('[2026] Scheduler hit an exception: boom', flush=True)\n"
            "time.sleep(600)\n")
    started = time.monotonic()
    outcome = supervise.run([sys.executable, "-c", code], env=None, log=tmp_path / "log", timeout=120,
                            fail_patterns=("Scheduler hit an exception",))
    assert time.monotonic() - started < 10
    assert outcome.matched == "[2026] Scheduler hit an exception: boom"
    assert "stopped on log line" in outcome.describe()
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "time.sleep(600)" in " ".join(p.cmdline()):
                alive.append(p)
        except psutil.Error:
            continue
    assert not alive


def test_on_poll_is_called_while_the_child_runs(tmp_path):
    calls = []
    supervise.run([sys.executable, "-c", "import time; time.sleep(0.5)"], env=None, log=tmp_path / "log",
                  timeout=30, on_poll=lambda: calls.append(1))
    assert len(calls) >= 2


def test_run_all_supervises_children_independently(tmp_path):
    jobs = [supervise.Job([sys.executable, "-c", "print('quick')"], None, tmp_path / "a.log", 30),
            supervise.Job([sys.executable, "-c", "import time; time.sleep(60)"], None, tmp_path / "b.log", 1.0)]
    started = time.monotonic()
    quick, slow = supervise.run_all(jobs)
    assert quick.returncode == 0 and quick.tail() == ["quick"]
    assert slow.timed_out and not quick.timed_out
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("proc_lists", [True, False], ids=["proc-children-files", "whole-table"])
def test_one_table_finds_every_descendant_of_the_given_roots_and_nothing_else(tmp_path, monkeypatch, proc_lists):
    if not proc_lists:  # a kernel without /proc/<pid>/task/<tid>/children
        monkeypatch.setattr(supervise, "_proc_children", lambda pid: None)
    elif supervise._proc_children(os.getpid()) is None:
        pytest.skip("this kernel keeps no /proc children lists; the whole-table case covers it")
    pidfile = tmp_path / "grandchild.pid"
    parent = subprocess.Popen([sys.executable, "-c", SPAWN, str(pidfile), "hang"], stdout=subprocess.PIPE)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent.stdout.readline()  # "spawned": the grandchild exists
        found = {p.pid for p in supervise._Table().descendants([psutil.Process(parent.pid)])}
        assert found == {int(pidfile.read_text())}
        mine = {p.pid for p in supervise._Table().children_of(os.getpid())}
        assert {parent.pid, bystander.pid} <= mine and int(pidfile.read_text()) not in mine
    finally:
        for proc in (parent, bystander):
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
