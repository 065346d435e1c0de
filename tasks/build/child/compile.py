"""Compile pool worker: run (shape, M) calls so their kernels get built.

Runs in a child forked by the zygote; the calls come from a queue all workers share.

deep_gemm compiles through jitwarm's nvcc shim. When another worker is compiling the
kernel a call needs, the shim answers "busy" at once: the call is deferred and the
worker moves on to kernels nobody has started. Deferred calls are retried at the end,
this time waiting for the other worker's result instead of compiling it again.

Calls are recorded in CUDA graphs that are never launched (executors._Base.capture):
deep_gemm still picks, builds and loads each call's kernel on the host, but no GEMM
runs, so workers do not queue on the one GPU. A shape whose capture fails runs eagerly,
and the log says so. The replay after the pool still runs its sweep and must compile 0.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from tasks.build.child import replay
from tasks.build.child.protocol import CompilePlan, CompileResult


def run(plan: CompilePlan, take) -> CompileResult:
    """Run (shape, M) calls: `take()` hands out the next chunk of a queue shared with the
    other workers (empty when it is exhausted)."""
    started = time.monotonic()
    worker = _Worker(plan)
    imported = time.monotonic() - started
    # Every call of a shape first needs the shape's scale-transpose kernel. A first call
    # that waits for it keeps the early calls from being deferred behind the transposes
    # (and their own kernels from being found late).
    os.environ["JITWARM_NVCC_WAIT"] = "1"
    if plan.first_call:
        worker.attempt([tuple(plan.first_call)])
    os.environ["JITWARM_NVCC_WAIT"] = "0"
    deferred, skipped = [], 0
    while chunk := take():
        new = worker.attempt(chunk)
        skipped += len(new)
        # Retry what was busy before: a call deferred behind one kernel may need another.
        deferred = worker.attempt(deferred) + new
    os.environ["JITWARM_NVCC_WAIT"] = "1"
    worker.attempt(sorted(deferred))
    worker.sync()
    return CompileResult(done={str(s): n for s, n in worker.done.items()}, deferred=skipped,
                         captured=worker.captured, eager=sorted(worker.eager), import_s=round(imported, 3),
                         seconds=round(time.monotonic() - started, 3))


class _Worker:
    """Calls into one deep_gemm, one shape's buffers at a time."""

    def __init__(self, plan: CompilePlan):
        self.plan, self.busy = plan, Path(plan.busy_flag)
        self.dg = replay.import_module(plan.module)
        self.factory = replay.factory_of(self.dg)
        self.current: tuple[int, object] | None = None  # shape index, its executor
        self.done: Counter = Counter()
        self.captured = 0  # calls recorded in a graph rather than run
        self.eager: set[int] = set()  # shapes whose graph capture failed

    def executor(self, s: int):
        if self.current is None or self.current[0] != s:
            self.current = None  # free the last shape's buffers first
            shape = self.plan.shapes[s]
            print(f"shape {s}: {shape.kind} N={shape.n} K={shape.k} groups={shape.groups}", flush=True)
            self.current = (s, self.factory(self.dg, shape.kind, shape.n, shape.k, shape.groups, self.plan.rows[s]))
        return self.current[1]

    def attempt(self, calls) -> list:
        """Make each call; return those whose kernel another worker is building."""
        busy_now: list = []
        start = 0
        while start < len(calls):
            s = calls[start][0]
            end = start
            while end < len(calls) and calls[end][0] == s:
                end += 1
            self._shape_calls(s, calls[start:end], busy_now)
            start = end
        return busy_now

    def _shape_calls(self, s: int, pending: list, busy_now: list) -> None:
        executor = self.executor(s)
        while pending:
            capture = None if s in self.eager else getattr(executor, "capture", None)
            made = 0
            try:
                if capture is None:
                    for _, m in pending:
                        executor.execute(m)
                        made += 1
                else:
                    with capture():
                        for _, m in pending:
                            executor.execute(m)
                            made += 1
                    self.captured += made
                self.done[s] += made
                return
            except Exception as exc:
                self.done[s] += made
                if capture is not None:
                    self.captured += made
                if self.busy.exists():
                    self.busy.unlink()
                    busy_now.append(pending[made])
                    pending = pending[made + 1:]
                elif capture is not None:
                    # Not a busy kernel: the capture itself failed. Run this shape eagerly.
                    print(f"  shape {s}: graph capture failed ({exc.__class__.__name__}: {exc}); "
                          "running its calls eagerly", flush=True)
                    self.eager.add(s)
                    pending = pending[made:]
                    with contextlib.suppress(Exception):  # a broken context shows again in the eager calls
                        executor.sync()
                else:
                    raise  # a real failure: the pool reports this worker's log

    def sync(self) -> None:
        if self.current is not None:
            self.current[1].sync()
