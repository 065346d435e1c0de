"""The pool's one supervised process: import torch once, then fork the workers.

Usage: python -m tasks.runner.child.zygote PLAN.json
       python -m tasks.runner.child.zygote --standby MODULE   (then the plan's path on stdin)

Importing torch takes seconds, and sixteen processes doing it at once take longer still.
This process imports it once, without touching CUDA, then forks one child per compile
slice and, as compile slots free up, one child per compiled shape's replay (once every
call of that shape is made) plus the few that share the replays of the shapes pulled
from the remote cache (tasks/runner/child/shared_replay.py). Each child runs on one GPU.
Each child imports deep_gemm and initialises CUDA itself (safe after fork, since the
parent never did), writes its own log and result file, and is killed if it outlives its
timeout (a shared replay child: if one piece does).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import msgspec

from tasks.runner.child import compile, protocol, replay, shared_replay
from tasks.state import records
from tasks.state.cacheroot import CacheRoot


TRACE = os.environ.get("JITWARM_TRACE") == "1"  # each child's start and end in the pool log, for benches
PARENT_ENV = "JITWARM_PARENT_PID"  # the `doit warm` that started this pool (set by tasks/runner/pool.py)
_PR_SET_PDEATHSIG = 1
_running: set[int] = set()  # forked children now running, each the leader of its own group


def _die_with(parent: int | None, sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux), and exit
    now if the parent is already gone: a `kill -9` of `doit warm` must not leave a pool
    sweeping the GPU for up to its timeout."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(128 + sig)


def _on_term(signum, frame) -> None:
    """The run is over (its `doit warm` died, or it ended the pool): end every child's
    group, so the nvcc runs and anything else the children started end too."""
    for pid in list(_running):
        _kill_group(pid)
    os._exit(128 + signum)


def main(argv: list[str]) -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _on_term)
    parent = os.environ.get(PARENT_ENV)
    _die_with(int(parent) if parent and parent.isdigit() else None, signal.SIGTERM)
    if argv[1] == "--standby":
        # Started before the plan exists (tasks/runner/pool.prestart): import first, then wait.
        problem = _import_torch(argv[2])
        if problem is not None:
            return problem
        imported = time.monotonic() - started
        line = sys.stdin.readline().strip()
        if not line:
            return 0  # the warm needed no pool after all
        plan = _read_plan(Path(line))
        timings = {"import_s": round(imported, 3), "waited_s": round(time.monotonic() - started - imported, 3)}
    else:
        plan = _read_plan(Path(argv[1]))
        problem = _import_torch(plan.module)
        if problem is not None:
            return problem
        timings = {"import_s": round(time.monotonic() - started, 3)}
    # The compile queue: one list, a counter in shared memory that every forked worker
    # advances, so an idle worker always takes the next calls nobody has started.
    queue, chunk, tail_start, tail_chunk = plan.queue, plan.chunk, plan.tail_start, plan.tail_chunk
    counter = multiprocessing.Value("l", 0)

    bounds = plan.bounds

    def take():
        with counter.get_lock():
            start = counter.value
            if bounds:
                end = next((b for b in bounds if b > start), len(queue))
            else:
                end = start + (chunk if start < tail_start else tail_chunk)
            counter.value = max(start, end)
        return queue[start:end]

    # Calls made per compile shape: a shape's replay may start while other shapes still
    # compile, once every one of its calls is made (each made call built and loaded its kernel).
    totals = Counter(s for s, _ in queue)
    made = multiprocessing.Array("l", max(len(plan.replays), max(totals, default=-1) + 1))

    def count(s: int, n: int) -> None:
        with made.get_lock():
            made[s] += n

    gpus = Gpus(plan.devices)
    compile_kids = [_CompileKid(job, take, count) for job in plan.compile]

    def calls_made(i: int) -> bool:  # every call of compile shape i is made (each built its kernel)
        return made[i] >= totals[i]

    def entries_in(i: int) -> bool:  # after a stub discovery, the pool has written its entries (stubs.py)
        return not plan.replays[i].ready or os.path.exists(plan.replays[i].ready)

    standbys = _Standbys(plan, calls_made, entries_in, lambda: all(kid.started() for kid in compile_kids)) \
        if plan.replays else None
    replay_kids = standbys.kids() if standbys else []  # replays[i] proves compile shape i
    shared = _Shared(plan.shared) if plan.shared else None
    if shared is not None:
        replay_kids += [shared.kid() for _ in range(plan.shared.processes)]

    def compiled(seconds: float, pids: list[int]) -> None:
        timings["compile_s"] = seconds
        _remove_build_leftovers(CacheRoot.from_plan(plan.cache), pids)
        Path(plan.timings).with_name(protocol.COMPILE_DONE).write_text("")  # compile results are final

    timings["replay_s"] = _run_children(compile_kids, replay_kids, max(len(compile_kids), plan.parallel_replay),
                                        plan.timeout_s, gpus, compiled, standbys)
    if shared is not None:
        shared.finish()
    Path(plan.timings).write_text(json.dumps(timings))
    return 0


def _read_plan(path: Path) -> protocol.PoolPlan:
    return msgspec.json.decode(path.read_bytes(), type=protocol.PoolPlan)


def _import_torch(module: str) -> int | None:
    """Import torch for the children (the real deep_gemm needs it); EXIT_ENV if that fails.

    torch is the slow import and leaves CUDA alone; deep_gemm's import starts CUDA, which
    cannot survive a fork, so each child imports deep_gemm itself."""
    if module != "deep_gemm":
        return None
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        print(f"{protocol.PROBLEM_PREFIX}cannot import torch: {exc}", file=sys.stderr, flush=True)
        return protocol.EXIT_ENV
    if torch.cuda.is_initialized():
        print(f"{protocol.PROBLEM_PREFIX}CUDA was initialised before fork", file=sys.stderr, flush=True)
        return protocol.EXIT_ENV
    return None


class Gpus:
    """The GPUs children run on, each holding as many as its memory allows (the pool sized
    them): a child goes to the least loaded GPU with room, and waits while none has any."""

    FULL = object()

    def __init__(self, devices: list[tuple[str, int]]):
        self.slots = dict(devices)
        self.load = dict.fromkeys(self.slots, 0)

    def take(self):
        """A GPU id for the next child, None when GPUs are not known (CUDA's default), or FULL."""
        if not self.slots:
            return None
        free = [d for d in self.slots if self.load[d] < self.slots[d]]
        if not free:
            return self.FULL
        device = min(free, key=lambda d: (self.load[d] / self.slots[d], self.load[d]))
        self.load[device] += 1
        return device

    def give(self, device) -> None:
        if device in self.load:
            self.load[device] -= 1


class _Kid:
    """One forked child: a job (log, status file) and the body it runs."""

    def __init__(self, job: protocol.Job, body):
        self.job, self.body = job, body
        self.device: str | None = None
        self.began = 0.0
        self.killed_for: str | None = None  # why the zygote killed it, if it did

    def overdue(self, now: float, timeout: float) -> bool:
        return now - self.began > timeout

    def idle(self) -> bool:
        """Whether it now waits more than it works (its slot may go to another child)."""
        return False

    def ready(self) -> bool:
        """Whether it may start before every compile worker has ended."""
        return True

    def ended(self, how: str) -> list:
        """Note how it ended; return the children to start in its place."""
        _note(self.job, self.killed_for or how)
        return []


class _CompileKid(_Kid):
    """A compile worker: once only its deferred calls are left, it mostly waits for the kernel
    queue's nvcc runs, and its slot may go to a replay meanwhile."""

    def __init__(self, job: protocol.CompileJob, take, count):
        self.stage = multiprocessing.Value("b", 0, lock=False)  # compile.SWEEPING, then compile.DRAINING
        super().__init__(job, lambda job: _compile_child(job, take, count, self._stage))

    def _stage(self, stage: int) -> None:
        self.stage.value = stage

    def idle(self) -> bool:
        return self.stage.value >= compile.DRAINING

    def started(self) -> bool:
        return self.stage.value >= compile.SWEEPING


class _ShapeReplayKid(_Kid):
    """The replay of compile shape `i`, forked once its calls are all made."""

    def __init__(self, job: protocol.ReplayJob, i: int, shape_ready):
        super().__init__(job, _replay_child)
        self.i, self.shape_ready = i, shape_ready

    def ready(self) -> bool:
        return self.shape_ready(self.i)


class _Standbys:
    """Replay processes started before their shape is known, once every compile worker has
    started: each imports deep_gemm, starts CUDA and links its view of the cache while the
    workers still compile, then replays the first shape whose calls are all made, and exits
    (one shape per process, so its view sees exactly what that shape's calls load). The
    replays of the last shapes then start at once instead of after a CUDA start-up each."""

    def __init__(self, plan: protocol.PoolPlan, calls_made, entries_in, workers_started):
        self.jobs, self.calls_made, self.entries_in = plan.replays, calls_made, entries_in
        self.workers_started = workers_started
        self.cache, self.module = plan.cache, plan.module
        self.views = Path(plan.replays[0].plan.staging).parent  # the run's directory, beside the shapes' views
        self.size = max(1, min(len(plan.replays), plan.parallel_replay))
        self.unassigned = list(range(len(plan.replays)))  # shapes no process replays yet
        self.waiting: list[_StandbyKid] = []  # forked, no shape yet
        self.started = 0
        self.broken = False  # a standby died before its shape: plain per-shape replays from then on
        self.compiled = False  # every compile worker has ended: no shape waits for its calls any more

    def kids(self) -> list[_Kid]:
        return [self._kid() for _ in range(self.size)]

    def ready(self, i: int) -> bool:
        """Whether shape i's replay may start: its calls are made (or no worker is left to make
        them: the replay then reports what is missing) and its entries are in."""
        return (self.compiled or self.calls_made(i)) and self.entries_in(i)

    def _kid(self) -> "_StandbyKid":
        n, self.started = self.started, self.started + 1
        log = records.log_path(Path(self.cache.root), f"replay-standby-{n}")
        return _StandbyKid(self, protocol.Job(log=str(log), status=str(self.views / f"standby-{n}.status")),
                           str(self.views / f"view-standby-{n}"))

    def assign(self, room: int) -> None:
        """Hand ready shapes to waiting processes, at most `room` (slots free of working children)."""
        for kid in list(self.waiting):
            if room <= 0:
                return
            i = next((i for i in self.unassigned if self.ready(i)), None)
            if i is None:
                break
            self.unassigned.remove(i)
            self.waiting.remove(kid)
            kid.give(i)
            room -= 1
            if TRACE:
                print(f"trace give {time.time():.3f} {Path(self.jobs[i].log).name} to {Path(kid.job.log).name}",
                      flush=True)
        if not self.unassigned:
            for kid in self.waiting:
                kid.give(_StandbyKid.NONE)
            self.waiting.clear()

    def ended(self, kid: "_StandbyKid", how: str) -> list[_Kid]:
        if kid in self.waiting:
            self.waiting.remove(kid)
        if kid.i is None and how != "exited with code 0" and not self.broken:
            self.broken = True  # it could not even start: its replays go to plain processes, which report why
            fallback = [_ShapeReplayKid(self.jobs[i], i, self.ready)
                        for i in self.unassigned]
            self.unassigned = []
            for other in self.waiting:
                other.give(_StandbyKid.NONE)
            self.waiting.clear()
            return fallback
        return [self._kid()] if len(self.unassigned) > len(self.waiting) and not self.broken else []


class _StandbyKid(_Kid):
    NONE = -2  # told when no shape is left for it

    def __init__(self, standbys: _Standbys, job: protocol.Job, staging: str):
        self.standbys, self.staging = standbys, staging
        self.shape = multiprocessing.Value("l", -1, lock=False)  # the compile shape it replays, once given
        self.i: int | None = None
        self.given_at = 0.0
        super().__init__(job, self._body)

    def ready(self) -> bool:
        return self.standbys.workers_started()

    def idle(self) -> bool:
        return self.i is None

    def give(self, i: int) -> None:
        if i >= 0:
            self.i, self.given_at = i, time.monotonic()
        self.shape.value = i

    def overdue(self, now: float, timeout: float) -> bool:
        return self.i is not None and now - self.given_at > timeout

    def ended(self, how: str) -> list:
        if self.i is not None:
            _note(self.standbys.jobs[self.i], self.killed_for or how)
        return self.standbys.ended(self, self.killed_for or how)

    def _body(self, job: protocol.Job) -> int:
        """In the child: get ready, wait for a shape, replay it into that shape's log and result."""
        view = replay.prepare(self.standbys.cache, Path(self.staging))
        began = time.monotonic()
        replay.start_device(self.standbys.module)
        print(f"device ready in {time.monotonic() - began:.2f}s", flush=True)
        while (i := self.shape.value) == -1:
            time.sleep(0.005)
        if i < 0:
            return 0
        shape_job = self.standbys.jobs[i]
        sys.stdout.flush()
        sys.stderr.flush()
        log = os.open(shape_job.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        print(f"replayed by a process started before its shape was ready (log {job.log})", flush=True)
        records.write_json(Path(shape_job.result), replay.run(shape_job.plan, view))
        return 0


class _Shared:
    """Processes that drain one queue of replay pieces (tasks/runner/child/shared_replay.py)."""

    def __init__(self, spec: protocol.SharedSpec):
        self.spec = spec
        self.counter = multiprocessing.Value("l", 0)
        self.started = 0
        self.broken: tuple[str, str] | None = None  # (how, log) of a process that could not start

    def take(self) -> int | None:
        with self.counter.get_lock():
            i = self.counter.value
            if i >= len(self.spec.pieces):
                return None
            self.counter.value = i + 1
            return i

    def left(self) -> bool:
        return self.broken is None and self.counter.value < len(self.spec.pieces)

    def kid(self) -> "_SharedKid":
        n, self.started = self.started, self.started + 1
        log = records.log_path(Path(self.spec.cache.root), f"replay-pulled-{n}")
        return _SharedKid(self, protocol.shared_process(self.spec, n, str(log)))

    def note(self, i: int, how: str, log: str) -> None:
        path = protocol.status_path(self.spec, i)
        if not path.exists():  # a timeout's note stays when the kill is reaped
            records.write_json(path, protocol.PieceStatus(how, log))

    def finish(self) -> None:
        """Pieces nobody took (their processes could not start) end with the reason."""
        how, log = self.broken or ("did not run", self.spec.pool_log)
        while (i := self.take()) is not None:
            self.note(i, how, log)


class _SharedKid(_Kid):
    def __init__(self, shared: _Shared, job: protocol.SharedProcessJob):
        self.shared = shared
        self.slot = multiprocessing.Array("d", [-1.0, 0.0, 0.0])  # piece, began, pieces taken
        super().__init__(job, lambda job: shared_replay.run(shared.spec, job, shared.take, self.slot))

    def _piece(self) -> tuple[int, float, int]:
        with self.slot.get_lock():
            return int(self.slot[0]), self.slot[1], int(self.slot[2])

    def overdue(self, now: float, timeout: float) -> bool:
        piece, began, taken = self._piece()
        if piece < 0:  # starting up (timed as a whole) or between two pieces
            return taken == 0 and now - self.began > timeout
        return now - began > timeout

    def ended(self, how: str) -> list:
        how = self.killed_for or how
        piece, _, taken = self._piece()
        if piece >= 0:
            self.shared.note(piece, how, self.job.log)
        if how == f"exited with code {protocol.EXIT_ENV}" or (taken == 0 and how != "exited with code 0"):
            self.shared.broken = (how, self.job.log)  # the next process would fare no better
        return [self.shared.kid()] if self.shared.left() else []


def _run_children(first: list[_Kid], later: list[_Kid], parallel: int, timeout: float, gpus: Gpus,
                  first_done, standbys: "_Standbys | None" = None) -> float:
    """Fork every `first` child, then each `later` one once `kid.ready()` says so or every
    `first` child has ended, up to `parallel` at a time (idle children aside), each on a GPU
    with room; record how each one ended. A child idle from the start (a standby replay) needs
    no free slot, only a GPU; `standbys` are handed their shapes as slots free up.
    `first_done(seconds, their pids)` is called when the last `first` child ends; returns the
    seconds from then to the end."""
    started = time.monotonic()
    queue, later, running, pids, first_ids = list(first), list(later), {}, [], {id(kid) for kid in first}
    ended_at = None if first else started
    if not first:
        first_done(0.0, [])
    while queue or later or running:
        if ended_at is None and not any(id(kid) in first_ids for kid in [*queue, *running.values()]):
            ended_at = time.monotonic()
            first_done(round(ended_at - started, 3), pids)
            if standbys is not None:
                standbys.compiled = True
        if standbys is not None:
            standbys.assign(parallel - _working(running))
        if not queue:
            queue = [kid for kid in later if ended_at is not None or kid.ready()]
            later = [kid for kid in later if kid not in queue]
        while queue and (queue[0].idle() or _working(running) < parallel) and (device := gpus.take()) is not Gpus.FULL:
            kid = queue.pop(0)
            kid.began, kid.device = time.monotonic(), device
            pid = _fork(kid.job, kid.body, device)
            if TRACE:
                print(f"trace fork {time.time():.3f} {Path(kid.job.log).name}", flush=True)
            if id(kid) in first_ids:
                pids.append(pid)
            running[pid] = kid
            _running.add(pid)
            if isinstance(kid, _StandbyKid):
                standbys.waiting.append(kid)
        pid, status = os.waitpid(-1, os.WNOHANG) if running else (0, 0)
        if pid == 0:
            now = time.monotonic()
            for child, kid in list(running.items()):
                if kid.killed_for is None and kid.overdue(now, timeout):
                    kid.killed_for = f"timed out after {timeout:.0f}s"
                    _kill_group(child)
            time.sleep(0.02)
            continue
        if pid in running:
            kid = running.pop(pid)
            if TRACE:
                print(f"trace exit {time.time():.3f} {Path(kid.job.log).name}", flush=True)
            gpus.give(kid.device)
            _running.discard(pid)
            _kill_group(pid)  # whatever the child left running ends with it
            later[:0] = kid.ended(_describe(status))
    if ended_at is None:
        ended_at = time.monotonic()
        first_done(round(ended_at - started, 3), pids)
    return round(time.monotonic() - ended_at, 3)


def _working(running: dict) -> int:
    return sum(not kid.idle() for kid in running.values())


def _remove_build_leftovers(cache: CacheRoot, pids: list[int]) -> None:
    """Build directories the workers' deferred calls left in the writable root (layout-specific)."""
    for path in cache.layout.build_leftovers(cache.path, pids):
        shutil.rmtree(path, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _fork(job: protocol.Job, body, device: str | None = None) -> int:
    zygote = os.getpid()
    pid = os.fork()
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpgid(pid, pid)  # both sides set it, so no kill can race the child's own call
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with(zygote, signal.SIGKILL)  # a zygote killed outright takes its children along
        os.setpgid(0, 0)  # its own group: a timeout or its exit ends everything it started
        log = os.open(job.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.environ.update(job.env)
        if device is not None:  # before the child's first CUDA call: it sees only this GPU
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            print(f"GPU {device} (CUDA_VISIBLE_DEVICES)", flush=True)
        code = body(job)
    except protocol.EnvironmentProblem as exc:
        print(f"{protocol.PROBLEM_PREFIX}{exc}", file=sys.stderr, flush=True)
        code = protocol.EXIT_ENV
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _compile_child(job: protocol.CompileJob, take, made, stage) -> int:
    records.write_json(Path(job.result), compile.run(job.plan, take, made, stage))
    return 0


def _replay_child(job: protocol.ReplayJob) -> int:
    records.write_json(Path(job.result), replay.run(job.plan))
    return 0


def _note(job: protocol.Job, how: str) -> None:
    records.replace_file(Path(job.status), how.encode())  # the parent polls for it: never half-written


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown with torch loaded: it costs seconds
