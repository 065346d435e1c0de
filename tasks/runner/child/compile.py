"""Compile pool worker: run (shape, M) calls so their kernels get built.

Runs in a child forked by the zygote; the calls come from a queue all workers share.

deep_gemm compiles through jitwarm's nvcc shim. When a call needs a kernel nobody has
built, the shim hands it to the kernel queue (or finds another worker building it) and
answers "busy" at once, naming the kernel: the call is deferred and the worker moves on.
A deferred call is made again once its kernel is in the shim's store (each retry of a busy
call costs deep_gemm a build directory and a shell: retrying them all after every take
stalled the workers for a third of their time on the H200). Once the queue is exhausted,
the worker makes each deferred call as soon as its kernel lands (`drain`), while its slot
may go to a replay; a kernel the queue could not build is compiled by the call that needs it.

Calls are recorded in CUDA graphs that are never launched (executors._Base.capture):
deep_gemm still picks, builds and loads each call's kernel on the host, but no GEMM
runs, so workers do not queue on the one GPU. A call whose capture fails runs eagerly and
capture resumes; a shape whose capture keeps failing runs eagerly. The log says which.
The replay after the pool still runs its sweep and must compile 0.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from tasks.plan.gemms import Kind
from tasks.runner import stubs
from tasks.runner.child import protocol, replay
from tasks.runner.child.protocol import CompilePlan, CompileResult

CAPTURE_RETRIES = 3
TRACE = os.environ.get("JITWARM_TRACE") == "1"  # per-take timings in the compile log, for benches
SLOW_CALL_S = 0.25  # a traced call slower than this built (or waited for) a kernel
DRAIN_POLL_S = 0.02  # how often a draining worker looks for the kernels its deferred calls wait for
# A draining worker whose kernels none has landed for this long makes its first deferred call
# waiting (compiling it itself if need be): a safety net, since the kernel queue reports failures.
DRAIN_STALL_S = 60.0
# A worker whose whole take came back busy waits (at most PAUSE_S) for one of its kernels while the
# kernel queue has BACKLOG_ROUNDS rounds of requests for its nvcc slots: early on most calls need a
# kernel that is queued already, and each such try costs deep_gemm a build directory and a few
# processes, taken from nvcc (on the H100, 3,600 tries took three quarters of the workers' time).
BACKLOG_ROUNDS = 2
PAUSE_S = 2.0


STUB_PIECE = 1024  # calls captured in one graph by a stub worker (bench/stub_discovery.py's size)

SWEEPING, DRAINING = 1, 2  # what `stage` hears: the worker takes calls; only its deferred calls are left


def run(plan: CompilePlan, take, made=None, stage=None) -> CompileResult:
    """Run (shape, M) calls: `take()` hands out the next chunk of a queue shared with the
    other workers (empty when it is exhausted); `made(shape, n)`, if given, hears of each
    n calls made (their kernels are built), so a shape's replay can start once all are;
    `stage(SWEEPING)` once its first calls are made (CUDA is up), `stage(DRAINING)` once the
    queue is exhausted and only deferred calls are left."""
    started = time.monotonic()
    calls = Counter()  # calls made per shape, as the zygote counts them (a stub worker reports them)

    def count(s: int, n: int) -> None:
        calls[s] += n
        if made is not None:
            made(s, n)

    worker = _Worker(plan, count)
    imported = time.monotonic() - started
    # Where DeepGEMM must transpose a shape's token scales before it even picks the GEMM and the
    # executor cannot pass them pre-transposed (not SM90), every call needs that kernel first. A
    # first call that waits for it keeps the early calls from being deferred behind the transposes
    # (and their own kernels from being found late). Elsewhere no call waits: the queue's probes
    # find the transposes (schedule.queue_order).
    os.environ["JITWARM_NVCC_WAIT"] = "1"
    first = plan.first_call
    if first and Kind(plan.shapes[first[0]].kind).token_scales and not worker.executor(first[0]).aligned:
        worker.on_made = None  # not a queued call: its M is made again from the queue, and counted then
        worker.attempt([tuple(first)])
        worker.on_made = count
    os.environ["JITWARM_NVCC_WAIT"] = "0"
    if TRACE:
        print(f"trace first {imported:.3f} {time.monotonic() - started:.3f} at {time.time():.3f}", flush=True)
    deferred, skipped = [], 0  # (call, the kernel it waits for)
    found = stubs.Found(Path(plan.scratch), Path(plan.found), calls) if plan.found else None
    while chunk := take():
        began = time.monotonic()
        if found is None:
            new = worker.attempt(chunk)
        else:  # a stub worker's take is a whole shape: one graph a piece, its found file kept current
            new = []
            for at in range(0, len(chunk), STUB_PIECE):
                new += worker.attempt(chunk[at:at + STUB_PIECE])
                found.update()
        if stage is not None:
            stage(SWEEPING)
        if TRACE:
            print(f"trace take {began - started:.3f} {time.monotonic() - began:.3f} shape {chunk[0][0]} "
                  f"calls {len(chunk)} busy {len(new)}", flush=True)
        skipped += len(new)
        if new and len(new) == len(chunk):
            pause(worker, deferred + new)
        # Retry what was busy once its kernel is built: it may then need another one.
        waiting, ready = [], []
        for call, key in deferred:
            (ready if worker.built(key) else waiting).append((call, key))
        again = worker.attempt([call for call, _ in ready])
        skipped += len(again)
        deferred = waiting + again + new
    if stage is not None:
        stage(DRAINING)
    if TRACE:
        print(f"trace deferred {time.monotonic() - started:.3f} calls {len(deferred)} at {time.time():.3f}",
              flush=True)
    skipped += drain(worker, deferred)
    worker.sync()
    if found is not None:
        found.update(force=True)
    if TRACE:
        print(f"trace end {time.monotonic() - started:.3f} cpu {time.process_time():.3f} at {time.time():.3f}",
              flush=True)
    return CompileResult(done={str(s): n for s, n in worker.done.items()}, deferred=skipped,
                         captured=worker.captured, eager=sorted(worker.eager),
                         capture_errors={str(s): r for s, r in worker.capture_errors.items()},
                         ran_after_failure=worker.ran_after_failure, import_s=round(imported, 3),
                         seconds=round(time.monotonic() - started, 3))


def pause(worker, deferred: list) -> None:
    """Wait while nvcc has enough queued work, until one of the deferred calls' kernels lands."""
    until = time.monotonic() + PAUSE_S
    while (time.monotonic() < until and worker.backlog() >= BACKLOG_ROUNDS * worker.slots
           and not any(worker.built(key) for _, key in deferred)):
        time.sleep(DRAIN_POLL_S)


def drain(worker, deferred: list) -> int:
    """Make the worker's deferred calls once nothing else is left: each as soon as its kernel lands,
    not in a fixed order behind one still compiling, so each shape's calls are all made (and
    its replay can start) as early as its own kernels allow. Returns how many came back busy again."""
    last_landed, again = time.monotonic(), 0
    while deferred:
        ready = [call for call, key in deferred if worker.built(key)]
        if ready:
            left = len(deferred)
            done = set(ready)
            busy = worker.attempt(sorted(ready))
            again += len(busy)
            deferred = [(c, k) for c, k in deferred if c not in done] + busy
            if len(deferred) < left:
                last_landed = time.monotonic()
            else:  # each came back busy on another kernel (or one the shim did not name)
                time.sleep(DRAIN_POLL_S)
            continue
        stuck = next((call for call, key in deferred if worker.given_up(key)), None)
        if stuck is None and time.monotonic() - last_landed > DRAIN_STALL_S:
            stuck = deferred[0][0]
        if stuck is None:
            time.sleep(DRAIN_POLL_S)
            continue
        os.environ["JITWARM_NVCC_WAIT"] = "1"
        worker.attempt([stuck])
        os.environ["JITWARM_NVCC_WAIT"] = "0"
        deferred = [(c, k) for c, k in deferred if c != stuck]
        last_landed = time.monotonic()
    return again


class _Worker:
    """Calls into one deep_gemm, one shape's buffers at a time."""

    def __init__(self, plan: CompilePlan, made=None):
        self.plan, self.busy, self.on_made = plan, Path(plan.busy_flag), made
        self.store = Path(os.environ["JITWARM_KSTORE"]) if os.environ.get("JITWARM_KSTORE") else None
        self.queue = Path(os.environ["JITWARM_NVCC_QUEUE"]) if os.environ.get("JITWARM_NVCC_QUEUE") else None
        self.slots = len(os.sched_getaffinity(0))  # the kernel queue runs one nvcc per usable core
        self.dg = replay.import_module(plan.module)
        self.factory = replay.factory_of(self.dg)
        self.current: tuple[int, object] | None = None  # shape index, its executor
        self.done: Counter = Counter()
        self.captured = 0  # calls recorded in a graph rather than run
        self.eager: set[int] = set()  # shapes whose graph capture kept failing: they run eagerly
        self.capture_errors: dict[int, str] = {}  # shape -> the first capture failure's reason
        self.failed_in_row: dict[int, int] = {}  # shape -> capture failures since one last captured a call
        self.ran_after_failure = 0  # calls run eagerly because their capture failed

    def _count(self, s: int, n: int) -> None:
        self.done[s] += n
        if n and self.on_made is not None:
            self.on_made(s, n)

    def executor(self, s: int):
        if self.current is None or self.current[0] != s:
            if self.current is not None and hasattr(self.current[1], "release"):
                self.current[1].release()  # its buffers and graph pool, before the next shape's
            self.current = None
            shape = self.plan.shapes[s]
            print(f"shape {s}: {shape.kind} N={shape.n} K={shape.k} groups={shape.groups}", flush=True)
            self.current = (s, self.factory(self.dg, shape.kind, shape.n, shape.k, shape.groups, self.plan.rows[s],
                                            aligned=True))
        return self.current[1]

    def built(self, key: str) -> bool:
        """Whether the kernel a deferred call waited for is in the shim's store now (a call
        deferred without a key, from a shim that did not name it, is always retried)."""
        return not key or self.store is None or (self.store / f"{key}.cubin").exists()

    def backlog(self) -> int:
        """Kernels requested from the kernel queue that are not built yet."""
        if self.queue is None or self.store is None:
            return 0
        try:
            keys = [k for k in os.listdir(self.queue) if not k.startswith(".")]
        except OSError:
            return 0
        return sum(not (self.store / f"{key}.cubin").exists() for key in keys)

    def given_up(self, key: str) -> bool:
        """Whether the kernel queue failed to build that kernel (protocol.queue_failed): the
        call is made waiting, so the shim compiles it here and nvcc's error reaches this worker."""
        return bool(key) and self.queue is not None and protocol.queue_failed(self.queue, key).exists()

    def busy_key(self) -> str | None:
        """The kernel the shim just said another worker is building ("" if it did not name
        it); None if the shim did not answer busy."""
        try:
            key = self.busy.read_text().strip()
        except OSError:
            return None
        self.busy.unlink()
        return key

    def attempt(self, calls) -> list:
        """Make each call; return (call, kernel key) for those whose kernel another worker is building."""
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
                        _call(executor, m)
                        made += 1
                else:
                    with capture():
                        for _, m in pending:
                            began = time.monotonic()
                            _call(executor, m)
                            made += 1
                            if TRACE and time.monotonic() - began > SLOW_CALL_S:
                                print(f"trace slow shape {s} M {m} {time.monotonic() - began:.3f}", flush=True)
                    self.captured += made
                    if made:
                        self.failed_in_row.pop(s, None)
                self._count(s, made)
                return
            except Exception as exc:
                self._count(s, made)
                if capture is not None:
                    self.captured += made
                if (key := self.busy_key()) is not None:
                    busy_now.append((pending[made], key))
                    pending = pending[made + 1:]
                elif capture is not None:
                    pending = self._capture_failed(s, exc, made, pending, busy_now)
                else:
                    raise  # a real failure: the pool reports this worker's log

    def _capture_failed(self, s: int, exc: Exception, made: int, pending: list, busy_now: list) -> list:
        """Run the call a capture failed on eagerly, then capture again: what cannot be
        captured is often a one-off (a first use in this process). Only a shape whose
        capture fails CAPTURE_RETRIES times in a row, with nothing captured in between,
        runs eagerly from then on. Returns the calls still to make."""
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.capture_errors.setdefault(s, reason)
        self.failed_in_row[s] = 1 if made else self.failed_in_row.get(s, 0) + 1
        with contextlib.suppress(Exception):  # a broken context shows again in the eager call
            self.executor(s).sync()
        if self.failed_in_row[s] >= CAPTURE_RETRIES:
            print(f"  shape {s}: graph capture failed ({reason}); running its calls eagerly", flush=True)
            self.eager.add(s)
            return pending[made:]
        print(f"  shape {s}: graph capture failed ({reason}); running that call eagerly, then capturing again",
              flush=True)
        call = pending[made]
        try:
            _call(self.executor(s), call[1])
        except Exception as err:
            if (key := self.busy_key()) is None:
                raise err from None  # the call's own error, without the capture's in front of it
            busy_now.append((call, key))
        else:
            self._count(s, 1)
            self.ran_after_failure += 1
        return pending[made + 1:]

    def sync(self) -> None:
        if self.current is not None:
            self.current[1].sync()


def _call(executor, m: int) -> None:
    """(shape, M) is a call; (shape, -M), the same call as sglang makes it (schedule.queue_order)."""
    if m > 0:
        executor.execute(m)
    else:
        executor.probe(-m)
