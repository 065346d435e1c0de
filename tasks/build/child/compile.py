"""Compile pool worker: run (shape, M) calls so their kernels get built.

Runs in a child forked by tasks/zygote.py; the calls come from a queue all workers share.

deep_gemm compiles through jitwarm's nvcc shim. When another worker is compiling the
kernel a call needs, the shim answers "busy" at once: the call is deferred and the
worker moves on to kernels nobody has started. Deferred calls are retried at the end,
this time waiting for the other worker's result instead of compiling it again.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import Counter
from pathlib import Path

from tasks.build.child.protocol import EnvironmentProblem


def run(plan: dict, take=None) -> dict:
    """Run (shape, M) calls: `take()` hands out the next chunk of a queue shared with the
    other workers (empty when it is exhausted); without it, run plan["pairs"]."""
    started = time.monotonic()
    try:
        dg = importlib.import_module(plan["module"])
    except ImportError as exc:
        raise EnvironmentProblem(f"cannot import {plan['module']}: {exc}") from None
    imported = time.monotonic() - started
    factory = getattr(dg, "jitwarm_executor", None)
    if factory is None:
        from tasks.build.child import executors
        factory = executors.create
    shapes, busy = plan["shapes"], Path(plan["busy_flag"])
    if take is None:
        chunks = iter([plan["pairs"], []])
        take = lambda: next(chunks)  # noqa: E731
    current: list = [None, None]  # shape index, executor: one shape's buffers at a time

    def executor(s: int):
        if current[0] != s:
            current[:] = [None, None]
            shape = shapes[s]
            print(f"shape {s}: {shape['kind']} N={shape['n']} K={shape['k']} groups={shape['groups']}", flush=True)
            current[:] = [s, factory(dg, shape["kind"], shape["n"], shape["k"], shape["groups"], shape["rows"])]
        return current[1]

    done, deferred, skipped = Counter(), [], 0

    def attempt(pairs) -> list:
        """Run each call; return those whose kernel another worker is building."""
        busy_now = []
        for s, m in pairs:
            try:
                executor(s).execute(m)
                done[s] += 1
            except Exception:
                if not busy.exists():
                    raise  # a real failure: the pool reports this worker's log
                busy.unlink()
                busy_now.append((s, m))
        return busy_now

    # Every call of a shape first needs the shape's scale-transpose kernel. A first call
    # that waits for it keeps the early calls from being deferred behind the transposes
    # (and their own kernels from being found late).
    os.environ["JITWARM_NVCC_WAIT"] = "1"
    if plan.get("first_call"):
        attempt([tuple(plan["first_call"])])
    os.environ["JITWARM_NVCC_WAIT"] = "0"
    while chunk := take():
        new = attempt(chunk)
        skipped += len(new)
        # Retry what was busy before: a call deferred behind one kernel may need another.
        deferred = attempt(deferred) + new
    os.environ["JITWARM_NVCC_WAIT"] = "1"
    attempt(sorted(deferred))
    if current[1] is not None:
        current[1].sync()
    return {"done": {str(s): n for s, n in done.items()}, "deferred": skipped,
            "import_s": round(imported, 3), "seconds": round(time.monotonic() - started, 3)}

