"""Nothing a CI cancel does leaves a process behind. A `kill -9` of
`doit warm` (its pid, or its process group) ends the pool, its workers and their nvcc
runs; found afterwards by their environment, as an operator would look for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import DODO, model_file


def processes_of(ws) -> list[psutil.Process]:
    """Every process whose environment points at this workspace's cache root or shim store."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("DG_JIT_CACHE_DIR") == str(ws.root) or str(ws.root) in env.get("JITWARM_KSTORE", ""):
            found.append(proc)
    return found


def cmdline(proc: psutil.Process) -> str | None:
    """Its command line, or None once it has ended (short-lived ones end between listing and reading)."""
    try:
        return None if proc.status() == psutil.STATUS_ZOMBIE else " ".join(proc.cmdline())
    except psutil.Error:
        return None


@pytest.mark.parametrize("target,queue", [("pid", "on"), ("group", "on"), ("pid", "off")])
def test_a_killed_warm_leaves_no_process_behind(ws, target, queue):
    # With the kernel queue, nvcc runs as a child of `doit warm` itself, not of a worker.
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    warm = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp,
                            env={**ws.env, "FAKE_DG_COMPILE_S": "60", "JITWARM_KERNEL_QUEUE": queue},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    # Wait until the pool's workers are compiling: the zygote, its workers and nvcc runs (not a
    # `nvcc --version`, which the stand-ins ask as deep_gemm does).
    while not any("fake_nvcc" in line and ".cu" in line for line in map(cmdline, processes_of(ws)) if line):
        assert time.monotonic() < deadline and warm.poll() is None, "the warm never reached nvcc"
        time.sleep(0.1)
    assert len(processes_of(ws)) >= 3
    if target == "pid":
        os.kill(warm.pid, signal.SIGKILL)
    else:
        os.killpg(warm.pid, signal.SIGKILL)
    warm.wait(timeout=10)
    time.sleep(3)
    left = [(p.pid, line) for p in processes_of(ws) if (line := cmdline(p)) is not None]
    assert left == [], left
