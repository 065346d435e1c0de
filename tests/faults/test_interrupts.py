"""SIGINT (Ctrl-C) and SIGTERM (a cancelled CI job) end `doit warm` with
one line, exit 130 or 143, and a summary line that agrees with the JSON report."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import DODO, model_file


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_warm_says_so_in_one_line_and_exits_with_the_signals_code(ws, sig, code):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n[[launch]]\ntp = 4\nm_list = [1, 32]\n")
    report = ws.tmp / "report.json"
    warm = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp,
                            env={**ws.env, "FAKE_DG_COMPILE_S": "5", "JITWARM_REPORT_JSON": str(report)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ws.pool_processes():  # the batch is running
        assert time.monotonic() < deadline and warm.poll() is None
        time.sleep(0.1)
    time.sleep(1)
    warm.send_signal(sig)
    out, err = warm.communicate(timeout=60)
    assert warm.returncode == code, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, out + err
    assert f"jitwarm: interrupted by {sig.name}: 2 targets not finished, counted as failed; exit {code}" in out
    summary = next(line for line in out.splitlines() if re.match(r"jitwarm: \d+ rebuilt", line))
    data = json.loads(report.read_text())
    assert data["exit_code"] == code
    assert f"{data['totals']['failed']} failed" in summary and data["totals"]["failed"] == 2, summary
    assert not ws.pool_processes()
    again = ws.doit("warm")  # nothing half-done is taken for warm
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(ws.status().values()) == {"U"}


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler yet (/proc/<pid>/status SigCgt): Python itself only
    catches SIGINT, so this is the moment dodo.py's first lines ran, before the heavy imports."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            caught = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_the_first_moments_of_a_run_is_one_line_not_a_traceback(ws, sig, code):
    # Regression: in the first ~0.4 s SIGINT printed a KeyboardInterrupt traceback and SIGTERM ended
    # the run with no line at all.
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    warm = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=ws.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _handles_sigterm(warm.pid):
        assert time.monotonic() < deadline and warm.poll() is None
        time.sleep(0.002)
    warm.send_signal(sig)
    out, err = warm.communicate(timeout=30)
    assert warm.returncode == code, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, out + err
    assert f"jitwarm: interrupted by {sig.name}" in out
