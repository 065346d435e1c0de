"""The pool's one supervised process: import torch once, then fork the workers.

Usage: python -m tasks.zygote PLAN.json

Importing torch takes seconds, and sixteen processes doing it at once take longer still.
This process imports it once, without touching CUDA, then forks one child per compile
slice and, when those are done, one child per shape replay. Each child imports deep_gemm
and initialises CUDA itself (safe after fork, since the parent never did), writes its
own log and result file, and is killed if it outlives its timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from . import compile_worker, records, worker


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    started = time.monotonic()
    if plan["module"] == "deep_gemm":
        # torch is the slow import and leaves CUDA alone; deep_gemm's import starts CUDA,
        # which cannot survive a fork, so each child imports deep_gemm itself.
        try:
            torch = importlib.import_module("torch")
        except ImportError as exc:
            print(f"{worker.PROBLEM_PREFIX}cannot import torch: {exc}", file=sys.stderr, flush=True)
            return worker.EXIT_ENV
        if torch.cuda.is_initialized():
            print(f"{worker.PROBLEM_PREFIX}CUDA was initialised before fork", file=sys.stderr, flush=True)
            return worker.EXIT_ENV
    timings = {"import_s": round(time.monotonic() - started, 3)}
    # The compile queue: one list, a counter in shared memory that every forked worker
    # advances, so an idle worker always takes the next calls nobody has started.
    queue, chunk = plan["queue"], plan["chunk"]
    counter = multiprocessing.Value("l", 0)

    def take():
        with counter.get_lock():
            start = counter.value
            counter.value = start + chunk
        return queue[start:start + chunk]

    compile_jobs = [(job, lambda job: _compile_child(job, take)) for job in plan["compile"]]
    timings["compile_s"], pids = _run_children(compile_jobs, len(compile_jobs), plan["timeout_s"])
    _remove_build_leftovers(Path(plan["root"]), pids)
    replay_jobs = [(job, _replay_child) for job in plan["replays"]]
    timings["replay_s"], _ = _run_children(replay_jobs, plan["parallel_replay"], plan["timeout_s"])
    Path(plan["timings"]).write_text(json.dumps(timings))
    return 0


def _run_children(jobs, parallel: int, timeout: float) -> tuple[float, list[int]]:
    """Fork up to `parallel` children at a time; record how each one ended."""
    started = time.monotonic()
    queue, running, timed_out, pids = list(jobs), {}, set(), []
    while queue or running:
        while queue and len(running) < parallel:
            job, body = queue.pop(0)
            pid = _fork(job, body)
            pids.append(pid)
            running[pid] = (job, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (job, began) in list(running.items()):
                if child not in timed_out and time.monotonic() - began > timeout:
                    timed_out.add(child)
                    _kill_group(child)
                    _note(job, f"timed out after {timeout:.0f}s")
            time.sleep(0.02)
            continue
        if pid in running:
            job, _ = running.pop(pid)
            _kill_group(pid)  # whatever the child left running ends with it
            if pid not in timed_out:
                _note(job, _describe(status))
    return round(time.monotonic() - started, 3), pids


def _remove_build_leftovers(root: Path, pids: list[int]) -> None:
    """deep_gemm builds in <root>/tmp/<pid>-<uuid>/; a deferred call leaves its directory."""
    for pid in pids:
        for path in (root / "tmp").glob(f"{pid}-*"):
            shutil.rmtree(path, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _fork(job: dict, body) -> int:
    pid = os.fork()
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpgid(pid, pid)  # both sides set it, so no kill can race the child's own call
        return pid
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: a timeout or its exit ends everything it started
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.environ.update(job.get("env", {}))
        code = body(job)
    except worker.EnvironmentProblem as exc:
        print(f"{worker.PROBLEM_PREFIX}{exc}", file=sys.stderr, flush=True)
        code = worker.EXIT_ENV
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _compile_child(job: dict, take) -> int:
    records.write_json(Path(job["result"]), compile_worker.run(job["plan"], take))
    return 0


def _replay_child(job: dict) -> int:
    records.write_json(Path(job["result"]), worker.run(job["plan"]))
    return 0


def _note(job: dict, how: str) -> None:
    tmp = Path(job["status"] + ".tmp")
    tmp.write_text(how)
    os.replace(tmp, job["status"])  # the parent polls for it: never half-written


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown with torch loaded: it costs seconds
