"""Compile pool: build the kernels of many shapes at once, on every usable core, then
replay each shape to attribute its entries and prove nothing is left to compile.

All (shape, M) calls form one queue that W worker processes drain together, a chunk at
a time. In the head, shapes take turns over their first M values in a spread order
(tasks/plan/schedule.py), so the workers mostly need different kernels; in the tail,
each shape's rest follows in one stretch, so workers seldom switch shapes. An idle
worker always finds work. deep_gemm compiles through the nvcc shim
(tasks/runner/nvcc_shim.sh), which builds each kernel once across all workers and
processes, and tells a worker at once when another is already building what it needs.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil

from tasks.runner import kernel_queue, known as known_sources, rename, shared, staging, stubs, supervise
from tasks.runner.child import protocol
from tasks.host import fingerprint, gpu
from tasks.host.settings import REPO_ROOT, Settings
from tasks.plan import gpumem, mlists, schedule
from tasks.plan.targets import ShapeWork
from tasks import session as run_state
from tasks.session import Session
from tasks.state import cacheview, entries, kernel_lock, recipes, records, sweep
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import Replayed
from tasks.plan.text import plural

SHIM = Path(__file__).resolve().parent / "nvcc_shim.sh"
QUEUE_DIR = "kqueue"  # in the run's work directory: the shim's compile requests
QUEUE_CHUNK = 8  # calls a worker takes at a time: few shape switches, little idling at the end
ZYGOTE = [sys.executable, "-m", "tasks.runner.child.zygote"]


@dataclass
class PoolRun:
    """What one pool run did: its workers, compiles, failures, memory cuts and timings."""

    workers: int = 0
    seconds: float = 0.0
    deferred: int = 0
    calls: int = 0  # compile calls made, and how many of them were recorded in a graph, not run
    captured: int = 0
    eager: set[str] = field(default_factory=set)  # labels of shapes whose graph capture kept failing
    capture_errors: dict[str, str] = field(default_factory=dict)  # shape label -> first capture failure
    ran_after_failure: int = 0  # calls run eagerly because their capture failed
    compiled: int = 0
    complete: set[str] = field(default_factory=set)  # shape keys whose compile calls all finished
    failures: dict[str, dict] = field(default_factory=dict)  # shape key -> {error, log_tail}
    m_values: dict[str, tuple[int, ...]] = field(default_factory=dict)  # after memory reduction
    reduced: dict[str, int] = field(default_factory=dict)  # shape key -> reduced max_m
    replay_slots: int = 1
    devices: list = field(default_factory=list)  # [(GPU id, the workers its memory holds)]; [] = unknown
    timings: dict = field(default_factory=dict)  # import, compile and replay phases (seconds)
    started: float = field(default_factory=time.monotonic)
    kernel_seconds: dict = field(default_factory=dict)  # nvcc time per kernel, from the shim
    queue: dict = field(default_factory=dict)  # what the kernel queue compiled (kernel_queue.KernelQueue.note)
    known: set[str] = field(default_factory=set)  # shape keys rebuilt from known sources, only replayed
    known_written: int = 0  # entries written from known sources
    stubbed: set[str] = field(default_factory=set)  # shape keys discovered by stubs (stubs.py)
    stub_written: int = 0  # entries written from what stub workers found
    fingerprint_s: float | None = None  # how long the run's fingerprint took, for the summary


def usable_cores(settings: Settings) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, settings.jobs) if settings.jobs else cores)


def plan_memory(works: list[ShapeWork], report: PoolRun, cores: int, devices: list[gpu.Device], margin: int) -> int:
    """Fit the works in GPU memory: reduce what cannot fit on the roomiest GPU (as sglang
    does), then give each GPU the workers its own free memory holds; size the pool."""
    for work in works:
        report.m_values[work.key] = work.m_values
    if not devices:  # no reading (nvidia-smi missing): cores decide, on whatever GPU CUDA picks
        report.replay_slots = cores
        return cores
    budgets = {d.id: d.free_bytes - margin for d in devices}
    budget = max(budgets.values())
    largest = 0
    for work in works:
        s = work.shape
        values, reduced = gpumem.reduce_to_fit(s.kind.value, s.n, s.k, s.groups, work.m_values, budget)
        report.m_values[work.key] = values
        if reduced is not None:
            report.reduced[work.key] = reduced
        if values:
            largest = max(largest, gpumem.worker_bytes(s.kind.value, s.n, s.k, s.groups, max(values)))
        else:
            need = gpumem.worker_bytes(s.kind.value, s.n, s.k, s.groups, gpumem.REDUCE_FLOOR) / gpumem.GIB
            report.failures[work.key] = {"error": f"does not fit in GPU memory: {need:.1f} GiB needed at max_m "
                                                  f"{gpumem.REDUCE_FLOOR}, {budget / gpumem.GIB:.1f} GiB available"}
    per_device = {d: max(0, b // largest) if largest else cores for d, b in budgets.items()}
    if not any(per_device.values()):  # nothing fits anywhere: one worker, whose shapes fail alone
        per_device[max(budgets, key=budgets.get)] = 1
    report.devices = [(d, int(n)) for d, n in per_device.items() if n > 0]
    slots = sum(n for _, n in report.devices)
    report.replay_slots = int(min(cores, slots))
    return int(min(cores, slots))


def shim_env(store: Path, env: dict | None, layout) -> dict:
    """Environment that routes deep_gemm's nvcc calls through the shim (DG_ wins over DJ_ in 0.2.x).
    The store lies in <root>/jitwarm/kstore/<toolchain>/; the recipes beside it, in <root>/jitwarm/recipes/."""
    env = dict(os.environ if env is None else env)
    env["JITWARM_REAL_NVCC"] = fingerprint.nvcc_path(env, layout)
    env["JITWARM_KSTORE"] = str(store)
    if queue_on():  # the recipes feed the kernel queue: without it they are not kept
        env["JITWARM_RECIPES"] = str(recipes.directory(store.parent.parent.parent))
    env["DG_JIT_NVCC_COMPILER"] = str(SHIM)
    env["JITWARM_NVCC_WAIT"] = "1"
    env["JITWARM_PARENT_PID"] = str(os.getpid())  # the pool dies with this process (child/zygote.py)
    env["JITWARM_RUN"] = str(run_state.MAIN_PID)  # the shim tags its builds with the run (tasks/state/builds.py)
    return env


def store_for(root: Path, fp: dict, max_age_s: float) -> Path:
    """The shim's store for this toolchain, shared by concurrent `doit warm` processes so
    that none compiles a kernel another is building. It holds copies (a later damaged
    cache entry cannot spoil them) and only needs to outlive concurrent runs: anything
    older than `max_age_s` is dropped (cubins, lock files, log lines), and so are other
    toolchains' stores nothing touched for that long."""
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    kstore = records.state_dir(root) / "kstore"
    store = kstore / digest
    cutoff = time.time() - max_age_s
    for path in [*store.glob("*.cubin"), *store.glob("*.sha256"), *store.glob("*.lock"), *store.glob(".*.*")] \
            if store.is_dir() else ():
        with contextlib.suppress(OSError):
            # The shim truncates a lock file each time it takes it; `.<key>.<pid>` is a copy a killed shim left.
            if path.stat().st_mtime < cutoff or _dead_copy(path.name):
                path.unlink()
    _trim_log(store / "compiled.log", cutoff)
    sweep.sweep_stores(kstore, store, max_age_s)
    recipes.prune(recipes.directory(root))  # those unused for a month, and killed writers' scratch copies
    # Writable now, or the warm ends in one line (the caller's _writes) instead of in every worker's shim.
    store.mkdir(parents=True, exist_ok=True)
    probe = store / f".probe.{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return store


def _dead_copy(name: str) -> bool:
    """`.<key>.<pid>` or `.<key>.sha.<pid>`: the shim's copies before their rename (nvcc_shim.sh), its shell gone."""
    pid = name.rsplit(".", 1)[-1]
    return name.startswith(".") and pid.isdigit() and not psutil.pid_exists(int(pid))


def _trim_log(log: Path, cutoff: float) -> None:
    """Drop compiled.log once all its lines are older than max_age_s. A rewrite could lose a line a
    concurrent shim appends; one store's log is bounded anyway, by its toolchain's distinct kernels."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return
    if all(_started(line) < cutoff for line in lines):
        with contextlib.suppress(OSError):
            log.unlink()


def _started(line: str) -> float:
    fields = line.split()
    try:
        return float(fields[1]) if len(fields) == 4 else -1.0
    except ValueError:
        return -1.0


def prestart(session: Session, fp: dict, base_env: dict) -> None:
    """Start the pool's process now: its torch import (seconds) then overlaps whatever the
    warm does before it needs the pool (pulls, planning). It waits for its plan on stdin;
    `run` hands it one, and `stop_standby` ends it if no pool is needed after all."""
    if session.standby is not None:
        return
    cache = session.root
    store = store_for(cache.path, fp, max_age_s=2 * session.shape_timeout_s)
    proc = supervise.spawn([*ZYGOTE, "--standby", fp["deep_gemm.module"]], shim_env(store, base_env, cache.layout),
                           records.log_path(cache.path, "pool"), cwd=REPO_ROOT, stdin=subprocess.PIPE)
    session.standby = ((str(cache.path), str(store)), proc)
    atexit.register(stop_standby, session)


def stop_standby(session: Session) -> None:
    """End a prestarted pool process that was never handed a plan."""
    if session.standby is None:
        return
    _, proc = session.standby
    session.standby = None
    with contextlib.suppress(OSError):
        proc.stdin.close()  # it exits on its own once its import is done
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _hand_plan(session: Session, store: Path, plan_file: Path) -> subprocess.Popen | None:
    """The prestarted pool process for this root, given its plan; None if there is none."""
    if session.standby is None or session.standby[0] != (str(session.root.path), str(store)):
        return None
    _, proc = session.standby
    with contextlib.suppress(OSError):  # OSError: it died just now
        if proc.poll() is None:
            proc.stdin.write(f"{plan_file}\n".encode())
            proc.stdin.close()
            session.standby = None
            return proc
    stop_standby(session)
    return None  # a fresh one reports whatever stopped it


@dataclass
class Replay:
    """How one shape's replay child ended, and what it reported."""

    status: str
    result: Replayed | None
    log: Path

    def tail(self, lines: int = 30) -> list[str]:
        return supervise.log_tail(self.log, lines)


@dataclass
class _Jobs:
    """What one pool run hands its zygote (written to plan_file), and how to read results back."""

    work_dir: Path
    runnable: list[ShapeWork]
    compiling: list[ShapeWork]
    queue: list[tuple[int, int]]
    compile: list[protocol.CompileJob]
    replays: dict[int, protocol.ReplayJob]  # runnable index -> a compiled shape's replay job
    shared_spec: protocol.SharedSpec | None  # how the pulled shapes are replayed
    shared_index: dict[int, int]  # runnable index -> its index among the pulled shapes
    plan_file: Path
    ready: dict[str, Path] = field(default_factory=dict)  # known-source shape key -> its ready file
    stubbed: bool = False  # the workers discover by stubs (stubs.py): replays wait for the entries written


def run(works: list[ShapeWork], session: Session, fp: dict, base_env: dict, store: Path, on_replay,
        report: PoolRun | None = None, pulled: dict | None = None, known: bool = True) -> PoolRun:
    """Compile every work's kernels in parallel, then replay each work in its own view.

    Works in `pulled` (key -> the entry names the remote cache gave it) skip the compile
    phase and are replayed together in a few shared processes (tasks/runner/shared.py);
    their replay completes whatever is missing. So do works whose lost entries known recipes
    rebuild (tasks/runner/known.py; with `known` and the kernel queue on): each one's replay
    starts once its entries are in.

    One supervised process (tasks/runner/child/zygote.py) imports torch once and forks the
    compile workers, then the replays. `on_replay(work, Replay)` is called for each work
    as soon as its replay ends (or the pool does), so results land as they come.
    """
    report = PoolRun() if report is None else report
    cache, settings = session.root, session.settings
    report.started, report.fingerprint_s = time.monotonic(), session.fingerprint_seconds
    slots = plan_memory(works, report, usable_cores(settings), gpu.devices(), gpu.margin_bytes())
    env = shim_env(store, base_env, cache.layout)
    pulled = pulled or {}
    rebuilt = {}
    if known and queue_on():
        renamer = rename.Renamer(cache, fp, Path(env["JITWARM_RECIPES"]))
        rebuilt = known_sources.plan(cache, _to_compile(works, report, pulled), fp,
                                     Path(env["JITWARM_RECIPES"]), locks(settings, fp, renamer.near), renamer)
        say_renamed(renamer)
    report.known = set(rebuilt)
    replayed = {**pulled, **{key: shape.names for key, shape in rebuilt.items()}}
    stub = _stub(store, env, fp, _to_compile(works, report, replayed)) if known else None
    jobs = _plan_jobs(works, cache, fp["deep_gemm.module"], settings, report, slots, replayed,
                      known_sources.ready_order(rebuilt, usable_cores(settings)), stub)
    if jobs is None:
        return report
    report.stubbed = {w.key for w in jobs.compiling} if jobs.stubbed else set()
    compiled_before = _compiled_count(store)
    compiling = (f"compiling {plural(len(jobs.compiling), 'shape')} ({plural(len(jobs.queue), 'call')}) with "
                 f"{plural(report.workers, 'worker')}" if jobs.compiling else "no shape to compile")
    print(f"{compiling}{_replay_only_note(jobs, rebuilt)}", flush=True)
    deliver = _Delivery(jobs, report, cache, replayed, on_replay)
    lander = known_sources.Lander(cache, store, env["JITWARM_REAL_NVCC"], rebuilt, jobs.ready) if rebuilt else None
    found = stubs.Lander(cache, store, [(Path(j.plan.scratch), Path(j.plan.found)) for j in jobs.compile],
                         Counter(c for c, _ in jobs.queue),
                         {c: Path(job.ready) for c, job in enumerate(jobs.replays.values())}) if jobs.stubbed else None
    if lander:
        lander.start()
    kernels = _start_queue(store, jobs, env, usable_cores(settings), cache, fp, rebuilt,
                           [x.done for x in (lander, found) if x is not None])

    finished = False

    def poll() -> None:
        nonlocal finished
        if found is not None and not finished:
            found.poll()
            if (jobs.work_dir / protocol.COMPILE_DONE).exists() and kernels.idle():
                found.finish()  # the workers are done and nothing is left to compile
                finished = True
        deliver(None)

    try:
        outcome = supervise.run([*ZYGOTE, str(jobs.plan_file)], env,
                                records.log_path(cache.path, "pool"), 2 * settings.shape_timeout_s + 120,
                                cwd=REPO_ROOT, on_poll=poll, proc=_hand_plan(session, store, jobs.plan_file))
        if kernels is not None:
            kernels.stop()
            report.queue = kernels.note()
        report.known_written = lander.written if lander else 0
        report.stub_written = found.written if found else 0
        report.timings = records.read_message(jobs.work_dir / "timings.json", dict) or {}
        report.kernel_seconds = kernel_seconds(store, compiled_before, run=run_state.MAIN_PID)
        report.compiled = report.kernel_seconds.get("count", 0)  # this run's builds, not a concurrent run's
        report.seconds = round(time.monotonic() - report.started, 3)
        if outcome.returncode == protocol.EXIT_ENV:
            error = protocol.problem_line(outcome.tail()) or outcome.describe()
            for w in jobs.runnable:
                report.failures[w.key] = {"error": error}
        else:
            _read_compile(report, jobs.compiling, jobs.compile, outcome)
        deliver(outcome)
    finally:
        if kernels is not None:
            kernels.stop()
        for view in [*jobs.work_dir.glob("view-*"), *jobs.work_dir.glob("shared/view-*")]:
            cacheview.salvage(view, cache)
        shutil.rmtree(jobs.work_dir, ignore_errors=True)
    print(_summary(report), flush=True)
    return report


def locks(settings: Settings, fp: dict, near=None) -> list:
    """The kernel locks beside the models that key kernels as this host does (or, with `near`, whose
    entries can be renamed for it); a bad one is a warning."""
    locks, problems = kernel_lock.matching(settings.models_dir, fingerprint.key_parts(fp), near)
    for line in problems:  # another GPU's or toolchain's lock is expected beside a model: a note, not a warning
        print(f"{'note' if 'no variant taken' in line else 'warning'}: {line}; its kernel sources are not used",
              flush=True)
    return locks


def say_renamed(renamer: rename.Renamer) -> None:
    if renamer.renamed:
        print(f"{plural(renamer.renamed, 'shape')} warmed under another toolchain ({'; '.join(sorted(renamer.changes))}): "
              f"their entries are named as deep_gemm keys them here, and built from their known sources", flush=True)
    if renamer.refused:
        more = f" (and {plural(len(renamer.notes) - 1, 'other reason')})" if len(renamer.notes) > 1 else ""
        print(f"note: {plural(renamer.refused, 'shape')} warmed under another toolchain cannot have their entries "
              f"renamed here, so they are warmed by discovery: {renamer.notes[0]}{more}", flush=True)


def _replay_only_note(jobs: _Jobs, rebuilt: dict) -> str:
    if not jobs.shared_spec:
        return ""
    pulled = len(jobs.shared_index) - len(rebuilt)
    parts = [f"{pulled} pulled from the remote"] if pulled else []
    if rebuilt:
        kernels = len(known_sources.recipes_of(rebuilt))
        parts.append(f"{plural(len(rebuilt), 'shape')} whose entries known sources give "
                     f"({plural(kernels, 'kernel')} to compile)")
    return f"; replaying {' and '.join(parts)} in {plural(jobs.shared_spec.processes, 'process', 'processes')}"


def _start_queue(store: Path, jobs: _Jobs, env: dict, slots: int, cache: CacheRoot, fp: dict,
                 rebuilt: dict, on_done: list) -> kernel_queue.KernelQueue | None:
    """The kernel queue of this pool run, started; kernels an earlier warm of these shapes
    compiled start now, while the workers import torch. None when JITWARM_KERNEL_QUEUE=off.
    Each of `on_done` hears of every compile that ends (the landers of known sources and stubs)."""
    if not queue_on():
        return None
    recipe_dir = Path(env["JITWARM_RECIPES"])

    def done(key: str, stored: bool) -> None:
        for callback in on_done:
            callback(key, stored)

    kernels = kernel_queue.KernelQueue(store, jobs.work_dir / QUEUE_DIR, recipe_dir, env, slots, run_state.MAIN_PID,
                                       on_done=done)
    found = {*known_sources.recipes_of(rebuilt), *recipes.for_digests(recipe_dir, _rebuild_digests(cache, jobs.compiling, fp))}
    kernels.submit_known(sorted(found, key=lambda r: (-r.seconds, r.key)))
    kernels.start()
    return kernels


def _to_compile(works: list[ShapeWork], report: PoolRun, replayed: dict) -> list[ShapeWork]:
    """The works that have calls, did not fail planning, and are not only replayed."""
    return [w for w in works if w.key not in replayed and report.m_values[w.key] and w.key not in report.failures]


def _stub(store: Path, env: dict, fp: dict, to_find: list[ShapeWork]) -> Path | None:
    """The stub cubin the workers discover with (stubs.py), or None: nothing to discover, the queue
    or stubs turned off, or no stub could be built (then said in one line)."""
    if not to_find or not queue_on() or not stubs.enabled():
        return None
    build = stubs.StubBuild(store, env["JITWARM_REAL_NVCC"], stubs.arch_flag(fp.get("gpu.arch")))
    stub = build.result()
    if stub is None:
        print(f"note: discovering without stub binaries ({build.problem}): workers wait for each kernel's nvcc",
              flush=True)
    return stub


def queue_on() -> bool:
    """JITWARM_KERNEL_QUEUE=off: workers compile what they find themselves, as before the queue."""
    return os.environ.get("JITWARM_KERNEL_QUEUE", "on") != "off"


def _rebuild_digests(cache: CacheRoot, works: list[ShapeWork], fp: dict) -> set[str]:
    """The binaries' digests of the entries these shapes' last warms used that this warm must
    build again: all of them after a change that deep_gemm's keys hold (nvcc, its version, the GPU),
    else those no root holds (batch._warm has taken damaged and incomplete ones out already, so
    presence is enough: no second hash of every binary). They name the recipes compiled first."""
    digests = set()
    for work in works:
        record, _ = records.read_shape(cache.path, work.key)
        if record is None:
            continue
        changed = fingerprint.key_parts(record.fingerprint) != fingerprint.key_parts(fp)
        digests.update(e.sha256 for name, e in record.entries.items()
                       if e.sha256 and (changed or entries.locate(cache, name) is None))
    return digests


def _plan_jobs(works, cache: CacheRoot, module: str, settings: Settings, report: PoolRun, slots: int,
               pulled: dict, ready_at: dict[str, float], stub: Path | None = None) -> _Jobs | None:
    """The compile jobs, replay jobs and shared replay spec of one run, written to its plan file.
    `pulled` are the works only replayed; those in `ready_at` wait for their entries, which
    should be in about then (seconds from now): their replays go in that order, after the rest.
    With `stub` (a stub cubin), the workers discover by stubs (tasks/runner/stubs.py)."""
    runnable = [w for w in works if report.m_values[w.key] and w.key not in report.failures]
    compiling = [w for w in runnable if w.key not in pulled]
    if stub is not None and compiling:
        queue, bounds = schedule.shape_order(compiling, report.m_values)
        tail_start = len(queue)
        report.workers = min(slots, len(compiling))
    else:
        stub, bounds = None, []
        queue, tail_start = schedule.queue_order(compiling, report.m_values, QUEUE_CHUNK)
        report.workers = min(slots, -(-len(queue) // QUEUE_CHUNK))
    if not runnable:
        return None
    root = cache.path
    work_dir = staging.run_dir(root, "pool")
    work_dir.mkdir(parents=True)
    shapes = [protocol.Shape(w.shape.kind.value, w.shape.n, w.shape.k, w.shape.groups) for w in runnable]
    compiled = [s for s, w in enumerate(runnable) if w.key not in pulled]
    compile_jobs = [protocol.CompileJob(
        plan=protocol.CompilePlan(module=module, shapes=[shapes[s] for s in compiled],
                                  rows=[max(report.m_values[runnable[s].key]) for s in compiled],
                                  busy_flag=str(work_dir / f"busy-{i}"),
                                  first_call=schedule.first_call(i, compiling, report.m_values),
                                  scratch=str(work_dir / f"stubs-{i}") if stub else "",
                                  found=str(work_dir / f"found-{i}.json") if stub else ""),
        env=_worker_env(work_dir, i, cache, stub),
        log=str(records.log_path(root, f"compile-{i}")), result=str(work_dir / f"compile-{i}.json"),
        status=str(work_dir / f"compile-{i}.status")) for i in range(report.workers)]
    replay_jobs = {s: protocol.ReplayJob(
        plan=protocol.ReplayPlan(cache=cache.as_plan(), staging=str(work_dir / f"view-{s}"), module=module,
                                 shape=shapes[s], m_values=list(report.m_values[runnable[s].key]),
                                 contig_alignment=mlists.CONTIG_ALIGNMENT),
        ready=str(work_dir / f"entries-in-{s}") if stub else "",
        log=str(records.log_path(root, runnable[s].name)), result=str(work_dir / f"replay-{s}.json"),
        status=str(work_dir / f"replay-{s}.status")) for s in compiled}
    replayed = sorted((s for s, w in enumerate(runnable) if w.key in pulled),
                      key=lambda s: (ready_at.get(runnable[s].key, -1.0), s))
    shared_index = {s: i for i, s in enumerate(replayed)}
    ready = {runnable[s].key: work_dir / "shared" / f"ready-{i}" for s, i in shared_index.items()
             if runnable[s].key in ready_at}
    shared_spec = shared.spec(work_dir / "shared", cache, module,
                              [(shapes[s], report.m_values[runnable[s].key]) for s in shared_index],
                              report.replay_slots,
                              [str(ready.get(runnable[s].key, "")) for s in shared_index]) if shared_index else None
    plan_file = work_dir / "plan.json"
    plan_file.write_bytes(msgspec.json.encode(protocol.PoolPlan(
        module=module, cache=cache.as_plan(), compile=compile_jobs, queue=queue, chunk=QUEUE_CHUNK,
        tail_start=tail_start, tail_chunk=schedule.TAIL_CHUNK, bounds=bounds,
        replays=list(replay_jobs.values()), shared=shared_spec, timeout_s=settings.shape_timeout_s,
        parallel_replay=report.replay_slots, timings=str(work_dir / "timings.json"), devices=report.devices)))
    records.log_path(root, "pool").parent.mkdir(parents=True, exist_ok=True)
    return _Jobs(work_dir, runnable, compiling, queue, compile_jobs, replay_jobs, shared_spec, shared_index, plan_file,
                 ready, stubbed=stub is not None)


def _worker_env(work_dir: Path, i: int, cache: CacheRoot, stub: Path | None) -> dict:
    """Compile worker i builds straight into the writable root and finds what every root holds;
    the kernels it finds are compiled by the kernel queue (kernel_queue.py). A stub worker builds
    into a scratch root of its own, seeing the real ones, with the stub for binaries (stubs.py)."""
    env = {"JITWARM_BUSY_FLAG": str(work_dir / f"busy-{i}"),
           "JITWARM_NVCC_QUEUE": str(work_dir / QUEUE_DIR) if queue_on() else "",
           "DG_JIT_CACHE_DIR": cache.env_value()}
    if stub is not None:
        scratch = work_dir / f"stubs-{i}"
        env.update(DG_JIT_CACHE_DIR=stubs.scratch_roots(cache, scratch), JITWARM_STUB_CUBIN=str(stub),
                   JITWARM_STUB_LOG=str(scratch / stubs.LOG))
    return env


class _Delivery:
    """Hands each shape's replay to `on_replay` as soon as it has ended (the pool polls it)."""

    def __init__(self, jobs: _Jobs, report: PoolRun, cache: CacheRoot, pulled: dict, on_replay):
        self.jobs, self.report, self.cache, self.pulled, self.on_replay = jobs, report, cache, pulled, on_replay
        self.pending = dict(enumerate(jobs.runnable))

    def __call__(self, outcome: supervise.ProcessEnd | None) -> None:
        jobs = self.jobs
        # Replays may end while other shapes still compile; they are judged (a replay that
        # compiled anything fails a shape the compile phase completed) once its results are in.
        compiled = outcome is not None or (jobs.work_dir / protocol.COMPILE_DONE).exists()
        for s, work in list(self.pending.items()):
            if s in jobs.shared_index:
                got = shared.outcome(jobs.shared_spec, jobs.shared_index[s], self.pulled[work.key], self.cache,
                                     outcome.describe() if outcome else None,
                                     "entries rebuilt from known sources" if work.key in jobs.ready else
                                     "remote manifest")
                if got is None:
                    continue
                replay = Replay(*got)
            else:
                job = jobs.replays[s]
                if not compiled or (outcome is None and not Path(job.status).exists()):
                    continue
                replay = Replay(_status(job, outcome), records.read_message(Path(job.result), Replayed),
                                Path(job.log))
            if compiled and not self.report.complete and not self.report.failures:
                _read_compile(self.report, jobs.compiling, jobs.compile, outcome)
            del self.pending[s]
            self.on_replay(work, replay)


def _summary(report: PoolRun) -> str:
    t = report.timings
    early = f" (started early, then waited {t['waited_s']}s for its plan)" if "waited_s" in t else ""
    eager = (f"; graph capture failed, so these ran eagerly (compile logs say why): {', '.join(sorted(report.eager))}"
             if report.eager else "")
    if report.capture_errors:
        label, reason = min(report.capture_errors.items())
        ran = (f"{plural(report.ran_after_failure, 'call')} ran eagerly after their capture failed"
               if report.ran_after_failure else "a capture failed")  # the eager call's kernel may have been queued
        eager += f"; {ran}, then capture resumed (first failure, {label}: {reason})"
    gpus = (f" on {len(report.devices)} GPUs (at most {', '.join(f'{n} on {d}' for d, n in report.devices)})"
            if len(report.devices) > 1 else "")
    q = report.queue
    queued = (f"; {q['compiled']} of them by the kernel queue, {q['known_compiled']} of {q['known']} from sources "
              f"known before the run" if q.get("compiled") or q.get("known") else "")
    if report.known:
        queued += (f"; {plural(report.known_written, 'entry', 'entries')} of {plural(len(report.known), 'shape')} "
                   f"written from known sources, without deep_gemm finding them")
    if report.stubbed:
        queued += (f"; found with stub binaries, {plural(report.stub_written, 'entry', 'entries')} written as each "
                   f"kernel landed")
    if report.workers:
        # Stub workers are done long before the kernels they found are: say how long each took.
        when = (f"by the kernel queue in {q.get('seconds', 0.0)}s, found in {t.get('compile_s', '?')}s" if report.stubbed
                else f"in {t.get('compile_s', '?')}s")
        how = (f"{when} with {plural(report.workers, 'worker')}{gpus} ({report.captured} of "
               f"{report.calls} calls recorded in CUDA graphs, not run; {report.deferred} calls deferred while their "
               f"kernel was being built{queued}{eager})")
    else:  # every shape came from known sources or the remote: nothing was discovered
        how = "with no compile workers" + (f", by the kernel queue in {q.get('seconds', 0.0)}s ({queued.lstrip('; ')})"
                                           if queued else "")
    return (f"compiled {plural(report.compiled, 'kernel')} {how}; replays "
            f"{t.get('replay_s', '?')}s; torch import {t.get('import_s', '?')}s{early}; deep_gemm import in "
            f"workers {t.get('worker_import_s', '?')}s; pool {report.seconds}s; fingerprint {report.fingerprint_s}s")


def _read_compile(report, compiling, compile_jobs, outcome) -> None:
    """Which shapes the compile phase finished, and which shape a dead worker died on.

    Workers share one queue, so a dead worker may have dropped calls of any shape: then
    no shape counts as complete, and each replay completes its own shape."""
    broken = False
    report.deferred = report.calls = report.captured = report.ran_after_failure = 0
    for job in compile_jobs:
        result = records.read_message(Path(job.result), protocol.CompileResult)
        if result is not None:
            report.deferred += result.deferred
            report.calls += sum(result.done.values())
            report.captured += result.captured
            report.eager |= {compiling[s].shape.label for s in result.eager}
            for s, reason in result.capture_errors.items():
                report.capture_errors.setdefault(compiling[int(s)].shape.label, reason)
            report.ran_after_failure += result.ran_after_failure
            slowest = max(report.timings.get("worker_import_s", 0), result.import_s)
            report.timings["worker_import_s"] = slowest
            continue
        broken = True
        tail = supervise.log_tail(Path(job.log), 200)
        culprit = _last_shape(tail)
        if culprit is not None:
            # The shape is named here too: a long traceback can push the log's shape line out of the tail.
            s = compiling[culprit].shape
            report.failures.setdefault(compiling[culprit].key, {
                "error": f"compile worker {_status(job, outcome)} on {s.kind.value} N={s.n} K={s.k} groups={s.groups} "
                         f"(log {job.log})", "log_tail": tail[-30:]})
    report.complete = set() if broken else {w.key for w in compiling}


def _status(job: protocol.Job, outcome: supervise.ProcessEnd | None) -> str:
    try:
        return Path(job.status).read_text()
    except OSError:
        how = outcome.describe() if outcome else "is still running"
        return f"did not run: the pool {how} (log {outcome.log if outcome else '?'})"


def kernel_seconds(store: Path, skip: int = 0, run: int | None = None) -> dict:
    """Compile durations the shim logged after its first `skip` lines, for `run` (a pid)
    or every run: how busy the cores were."""
    try:
        rows = [r.split() for r in (store / "compiled.log").read_text().splitlines()[skip:]]
        spans = [float(r[2]) - float(r[1]) for r in rows if len(r) >= 3 and (run is None or r[3:] == [str(run)])]
    except (OSError, ValueError):
        return {}
    if not spans:
        return {}
    return {"count": len(spans), "sum": round(sum(spans), 1), "mean": round(sum(spans) / len(spans), 2),
            "max": round(max(spans), 2)}


def _last_shape(lines: list[str]) -> int | None:
    for line in reversed(lines):
        if line.startswith("shape ") and ":" in line:
            try:
                return int(line.split()[1].rstrip(":"))
            except ValueError:
                return None
    return None


def _compiled_count(store: Path) -> int:
    try:
        return len((store / "compiled.log").read_text().splitlines())
    except OSError:
        return 0


