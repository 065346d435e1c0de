"""Warm shapes in batches: compile all their kernels in parallel, then prove each shape.

Shape tasks only queue their shape; the first target task to run flushes the queue.
doit runs every selected shape task before any target task, so one batch holds every
stale shape of the run and the compile pool sees all of them at once.

Per shape, a file lock keeps two `doit warm` processes on one cache root from warming
it twice: the second waits and reuses the first one's record. After the compile pool,
each shape's full sweep is replayed in a fresh process against a private view of the
cache (tasks/runner/child/replay.py): it attributes the entries the shape uses and must
compile nothing. A replay that compiles something is a failed warm, unless the pool
could not finish that shape (then the replay completes it). Shapes pulled from the
remote cache skip the compile pool and share a few replay processes (tasks/runner/shared.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

import filelock
import msgspec
from doit.exceptions import TaskFailed

from tasks import session as run_state
from tasks.runner import bake, commit, pool, preflight
from tasks.runner.child import protocol
from tasks.host.settings import REPO_ROOT
from tasks.plan.targets import ShapeWork, Target
from tasks.remote import sync
from tasks.session import Session
from tasks.state import entries, records
from tasks.state.schema import SCHEMA, PoolNote, RemoteNote, ReplayStats, ShapeDesc, ShapeRecord
from tasks.plan.text import plural

Items = list[tuple[ShapeWork, list[Target]]]  # each shape with the targets that need it


def enqueue(work: ShapeWork, session: Session, dependents: list[Target] = ()) -> None:
    """doit action of a shape task."""
    if os.getpid() != run_state.MAIN_PID:
        _warn_doit_n()
        run(session, [(work, list(dependents))])  # a `doit -n` worker process: no shared queue
        return
    fp = session.fingerprint
    remote = session.settings.remote
    proofs_may_do = remote is not None and remote.verify == "manifest"
    cannot = preflight.problem(fp)
    if cannot is not None and not proofs_may_do and not fp.get("gpu.declared"):
        session.pending[work.key] = (work, list(dependents))  # each target then fails in one line
        return
    if not session.pending and not proofs_may_do and not fp.get("gpu.declared") and cannot is None:
        # There is work: start the pool's process now, so its torch import overlaps the
        # rest of the queueing and the remote pulls. Not when pulled proofs may settle it
        # all: then torch is imported only for what the remote lacks.
        with _writes(session):
            pool.prestart(session, fp, _worker_env())
    session.pending[work.key] = (work, list(dependents))  # the pool's "compiling N shapes" line counts them


_warned_doit_n = False


def _warn_doit_n() -> None:
    global _warned_doit_n
    if not _warned_doit_n:
        _warned_doit_n = True
        # doit -n's processes share one stdout: whole lines only, so none lands inside another's
        # (unbuffered, as under PYTHONUNBUFFERED, a line and its newline are two writes).
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stdout.reconfigure(line_buffering=True, write_through=False)
        print("jitwarm: under `doit -n` every doit process runs its own compile pool on all cores; "
              "`doit warm` without -n is faster (its one pool already uses every core)", flush=True)


def finish_target(target: Target, session: Session, local_keys: frozenset[str] | None = None):
    """doit action of a target: warm the queued batch, then commit the marker, or fail with
    each unwarmed shape's reason.

    Under sharding, `local_keys` names the target's shapes this shard warms; when only
    the other shards' shapes are missing, the target's part here succeeded.
    """
    if target.error:
        return TaskFailed(target.error)
    fp = session.fingerprint
    if target.works and (problem := preflight.problem(fp)):
        return TaskFailed(problem)  # one line, not one per shape
    flush(session)
    cache = session.root
    if not records.target_reasons(cache, target.name, target.launch_hash, target.plan_hash, fp):
        return None  # the batch committed it
    try:
        failures = commit.commit_target(target, cache, fp)
    except OSError as exc:
        return TaskFailed(session.write_error or records.os_problem(exc))
    if failures and session.write_error:
        return TaskFailed(session.write_error)  # the cause, rather than the shapes it left unrecorded
    if failures and local_keys is not None:
        if not any(records.shape_reasons(cache, w.key, fp) for w in target.works if w.key in local_keys):
            print(f"{target.name}: partial, {len(local_keys)} of {len(target.works)} shapes warmed in this "
                  f"shard; the marker is written where every shard's shapes are in one cache root", flush=True)
            return None
    return TaskFailed("\n".join(failures)) if failures else None


def flush(session: Session) -> None:
    if session.pending:
        items = list(session.pending.values())
        session.pending.clear()
        try:
            with _writes(session):
                run(session, items)
        finally:
            pool.stop_standby(session)  # unused if every shape was warmed by a concurrent run


@contextlib.contextmanager
def _writes(session: Session | None):
    """A write into the cache root that fails (full disk, read-only mount) ends what it
    interrupts with one line, printed once; the targets it leaves unwarmed fail with that
    line, and the run goes on with the rest."""
    try:
        yield
    except OSError as exc:
        problem = records.os_problem(exc)
        if session is None or session.write_error is None:
            if session is not None:
                session.write_error = problem
            print(f"jitwarm: {problem}", flush=True)


def run(session: Session, items: Items) -> None:
    cache, fp = session.root, session.fingerprint
    if problem := preflight.problem(fp):
        for work, _ in items:
            _write(cache.path, _record(work, fp, ok=False, error=problem))
        return
    mine, theirs = [], []
    for work, dependents in items:
        lock = filelock.FileLock(str(_lock_path(cache.path, work)))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            theirs.append((work, dependents, lock))
            continue
        mine.append((work, dependents, lock))
    try:
        _warm(session, fp, [(w, d) for w, d, _ in mine if records.shape_reasons(cache, w.key, fp)])
        for work, dependents, _ in mine:
            _commit(cache, fp, dependents)
    finally:
        for _, _, lock in mine:
            lock.release()
    for work, dependents, lock in theirs:
        print(f"{work.name}: another process is warming it; waiting", flush=True)
        try:
            lock.acquire(timeout=session.shape_timeout_s)
        except filelock.Timeout:
            _gave_up_waiting(cache, fp, work, dependents, session.shape_timeout_s, lock.lock_file)
            continue
        try:
            if records.shape_reasons(cache, work.key, fp):
                _warm(session, fp, [(work, dependents)])
            else:
                print(f"{work.name}: reusing the concurrent warm's result", flush=True)
            _commit(cache, fp, dependents)
        finally:
            lock.release()


def _gave_up_waiting(cache, fp: dict, work: ShapeWork, dependents: list[Target], waited: float, path) -> None:
    """A concurrent warm held the shape longer than shape_timeout_s (a long batch can,
    honestly): this run fails the shape in one line and goes on with its other targets."""
    error = (f"another warm held its lock {path} for longer than shape_timeout_s ({waited:.0f}s); "
             f"run doit warm again once it has finished")
    print(f"{work.name}: {error}", flush=True)
    if records.shape_reasons(cache, work.key, fp):  # it may have landed just now: never overwrite that
        _write(cache.path, _record(work, fp, ok=False, error=error))
        _commit(cache, fp, dependents)


def _warm(session: Session, fp: dict, items: Items, pulls: dict[str, sync.Transfer] | None = None,
          known: bool = True) -> None:
    """Compile and replay `items`; record each shape and commit its targets as it lands.

    With a remote cache, shapes are pulled first and only replayed; a pulled shape whose
    replay fails loses what the pull brought and is compiled locally (`pulls` then holds
    the first attempt's outcomes and the remote is not asked again). Shapes whose lost
    entries known sources rebuilt (tasks/runner/known.py; with `known`) are only replayed
    too; one whose replay compiled anything is warmed again by discovery. So is a shape whose
    replay compiled anything after stub discovery (tasks/runner/stubs.py), then without stubs.
    """
    if not items:
        return
    cache = session.root
    if pulls is None:
        for line in entries.remove_broken(cache):  # else they would block their own rebuild
            print(line, flush=True)
        for work, _ in items:
            record, _ = records.read_shape(cache.path, work.key)
            for line in entries.remove_damaged(cache, record.entries) if record else ():
                print(line, flush=True)
    remote = sync.for_settings(session.settings)
    scratch = cache.path / "tmp" / f"jitwarm-remote-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        first_try = pulls is None
        if first_try:
            pulls = sync.pull(remote, [w for w, _ in items], cache, fp, scratch)
            if remote is not None and remote.config.verify == "manifest":
                items = [(w, d) for w, d in items if not _land_proven(cache, fp, w, d, pulls.get(w.key))]
            if fp.get("gpu.declared") and _no_gpu(fp):
                items = _bake(session, fp, items, pulls, remote, scratch)
                _no_gpu_here(cache, fp, items, pulls, remote.config.verify if remote else None)
                return
            if not items:
                return
        landing = _Landing(cache, fp, items, pulls, replay_only=first_try)
        store = pool.store_for(cache.path, fp, max_age_s=2 * session.shape_timeout_s)
        pool.run(landing.works, session, fp, _worker_env(), store, landing.on_replay, landing.report,
                 landing.replay_only, known)
        landing.record_unwarmed()
        if landing.retry:
            sync.discard_pulled(cache.path, [pulls[w.key] for w, _ in landing.retry if w.key in pulls])
            _warm(session, fp, landing.retry, pulls, known=False)
        if remote is not None and remote.config.writable:
            sync.push(remote, landing.compiled(), cache, fp, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _no_gpu(fp: dict) -> bool:
    """Whether this host has only a declared GPU: the stand-ins need none (tests set one's absence)."""
    return fp["deep_gemm.module"] == "deep_gemm" or os.environ.get("JITWARM_STAND_IN_GPU") == "none"


def _bake(session: Session, fp: dict, items: Items, pulls: dict, remote, scratch) -> Items:
    """Bake what known sources give of the shapes no pull brought (tasks/runner/bake.py), record
    them as baked, push them unproven where the remote is writable; return the items left."""
    todo = [(w, d) for w, d in items if getattr(pulls.get(w.key), "status", None) != "hit"]
    if not todo:
        return items
    cache = session.root
    store = pool.store_for(cache.path, fp, max_age_s=2 * session.shape_timeout_s)
    found, failed = bake.bake(session, fp, [w for w, _ in todo], store, _worker_env())
    baked, done = [], set()
    for work, _ in todo:
        described = bake.complete(cache, found[work.key]) if work.key in found else None
        if described is None:
            if work.key in found:  # its known sources did not build: say why, not "no GPU" alone
                why = next((failed[r.key] for r in found[work.key].missing.values() if r.key in failed), "")
                _write(cache.path, _record(work, fp, ok=False, finished_at=records.now(), error=(
                    f"baking it for the declared {fp['gpu.declared']} from known sources failed"
                    f"{f' ({why})' if why else ''}; no GPU here to find its kernels otherwise")))
                run_state.emit("shape_done", key=work.key, ok=False)
                done.add(work.key)
            continue
        _write(cache.path, _record(
            work, fp, ok=False, baked=True, entries=described, finished_at=records.now(),
            verification="baked from known sources, not replayed",
            error=f"baked for the declared {fp['gpu.declared']} from known sources; not proven, as no GPU is here to "
                  f"replay it: `doit warm` on that GPU proves it"))
        run_state.emit("shape_done", key=work.key, ok=False)
        baked.append((work, sorted(described)))
        done.add(work.key)
    if baked and remote is not None and remote.config.writable:
        sync.push(remote, baked, cache, fp, scratch)
    return [(w, d) for w, d in items if w.key not in done]


def _no_gpu_here(cache, fp: dict, items: Items, pulls: dict, verify: str | None) -> None:
    """With only a declared GPU, what no proven pull settled cannot be compiled or replayed here."""
    for work, _ in items:
        _write(cache.path, _record(work, fp, ok=False, finished_at=records.now(),
                                   error=no_gpu_line(fp["gpu.declared"], pulls.get(work.key), verify)))
        run_state.emit("shape_done", key=work.key, ok=False)


def no_gpu_line(declared: str, outcome, verify: str | None) -> str:
    """Why a shape stays cold on a host that only declares its GPU (one line)."""
    if outcome is None:
        why = "no remote cache to pull a proven artifact from"
    elif outcome.status != "hit":
        why = f"the remote's artifact: {outcome.status}" + (f" ({outcome.detail})" if outcome.detail else "")
    elif outcome.proof and verify == "replay":
        why = "verify = replay asks for a replay"
    else:
        why = "the remote's artifact carries no replay proof that matches it"
    return f"no GPU here (JITWARM_GPU={declared} only declares one) to compile or replay this shape; {why}"


def _land_proven(cache, fp: dict, work: ShapeWork, dependents: list[Target], outcome) -> bool:
    """Record a pulled shape warm on its manifest's proof alone (no torch, no GPU), if it has one."""
    if outcome is None or not sync.proven_pull(outcome, work):
        return False
    described = {name: entries.describe(cache, name) for name in outcome.names}
    if None in described.values():
        return False
    proof = outcome.proof
    how = (f"remote manifest: every file matched its sha256 here; the pusher's replay of all {proof['calls']} "
           f"calls compiled 0 ({proof.get('proved_at') or 'time not given'}); not replayed here (verify = manifest)")
    record = _record(work, fp, ok=True, entries=described, new=[], calls=proof["calls"], sweep_seconds=0.0,
                     verification=how, launches="none: proven by the pusher", finished_at=records.now(),
                     replay=ReplayStats(0, proof["calls"], 0.0), remote=RemoteNote(pull=outcome.as_record()))
    _write(cache.path, record)
    run_state.emit("shape_done", key=work.key, ok=True)
    print(f"warmed {work.name}: {plural(len(described), 'entry', 'entries')}, proven by the pusher's replay", flush=True)
    _commit(cache, fp, dependents)
    return True


class _Landing:
    """Where a batch's replays land: each shape's record, and its targets' markers."""

    def __init__(self, cache, fp: dict, items: Items, pulls: dict, replay_only: bool):
        self.cache, self.fp, self.pulls = cache, fp, pulls
        self.works = [w for w, _ in items]
        self.dependents = {w.key: d for w, d in items}
        # Pulled shapes are only replayed: key -> the entry names their artifact brought.
        self.replay_only = {key: o.names for key, o in pulls.items() if o.status == "hit"} if replay_only else {}
        self.report = pool.PoolRun()  # pool.run fills it in before the first replay is delivered
        self.recorded: dict[str, ShapeRecord] = {}
        self.retry: Items = []

    def on_replay(self, work: ShapeWork, replay: pool.Replay) -> None:
        """Record each shape as its replay ends, and commit targets as soon as they hold."""
        record = _replay_record(work, replay, self.report, self.fp)
        if work.key in self.replay_only and not sync.accept_replay(self.pulls[work.key], record):
            self.retry.append((work, self.dependents[work.key]))
            return  # compiled locally next
        if work.key in self.report.known and not (record.ok and not record.new):
            why = f"its replay compiled {len(record.new)}" if record.ok else f"its replay failed ({record.error})"
            print(f"{work.name}: known sources did not rebuild it ({why}); warming it by discovery", flush=True)
            self.retry.append((work, self.dependents[work.key]))
            return
        if work.key in self.report.stubbed and record.new:
            print(f"{work.name}: its replay compiled {len(record.new)} after stub discovery (the entries written "
                  f"for it were not all it loads); warming it by discovery, waiting for nvcc", flush=True)
            self.retry.append((work, self.dependents[work.key]))
            return
        with _writes(run_state.current()):
            self._write(work, record)
        self.recorded[work.key] = record
        if record.ok:
            print(f"warmed {work.name}: {plural(len(record.entries), 'entry', 'entries')}, replay compiled {len(record.new)}",
                  flush=True)
            _commit(self.cache, self.fp, self.dependents[work.key])

    def record_unwarmed(self) -> None:
        """A failed record for every shape the pool never delivered (and that is not retried)."""
        retried = {w.key for w, _ in self.retry}
        for work in self.works:
            if work.key not in self.recorded and work.key not in retried:
                failure = self.report.failures.get(work.key, {"error": "not warmed"})
                self._write(work, _record(work, self.fp, ok=False, **failure))

    def compiled(self) -> list[tuple[ShapeWork, list[str]]]:
        """(work, entry names) of the shapes this batch compiled, not those the remote gave it."""
        works = {w.key: w for w in self.works}
        return [(works[key], sorted(record.entries)) for key, record in self.recorded.items()
                if record.ok and getattr(self.pulls.get(key), "status", None) != "hit"]

    def _write(self, work: ShapeWork, record: ShapeRecord) -> None:
        if work.key in self.pulls:  # e.g. a pull rejected by its replay, then warmed locally
            record.remote = RemoteNote(pull=self.pulls[work.key].as_record())
        _write(self.cache.path, record)
        run_state.emit("shape_done", key=work.key, ok=record.ok)


def _replay_record(work: ShapeWork, replay: pool.Replay, report: pool.PoolRun, fp: dict) -> ShapeRecord:
    record = _record(work, fp, ok=False, finished_at=records.now(), log=str(replay.log),
                     seconds=round(time.monotonic() - report.started, 3),  # this shape's batch, so far
                     pool=PoolNote(workers=report.workers, compiled=report.compiled, deferred=report.deferred,
                                   complete=work.key in report.complete, timings=report.timings,
                                   kernel_seconds=report.kernel_seconds))
    if work.key in report.reduced:
        record.reduced_max_m, record.m_count = report.reduced[work.key], len(report.m_values[work.key])
    result, tail = replay.result, replay.tail()
    if result is not None:
        for name in msgspec.structs.fields(result):
            setattr(record, name.name, getattr(result, name.name))
        record.ok = True
        record.replay = ReplayStats(len(result.new), result.calls, result.sweep_seconds)
        if result.new and work.key in report.complete:
            record.ok = False
            record.error = (f"replay compiled {len(result.new)} new entries after the warm; "
                            f"the warm missed kernels (they are kept: warm again)")
    elif work.key in report.failures:
        failure = report.failures[work.key]
        record.error, record.log_tail = failure["error"], failure.get("log_tail", [])
    elif replay.status == f"exited with code {protocol.EXIT_ENV}":
        record.error = protocol.problem_line(tail) or (tail[-1] if tail else replay.status)
    else:
        record.error, record.log_tail = f"replay {replay.status} (log {replay.log})", tail
    return record


def _record(work: ShapeWork, fp: dict, **fields) -> ShapeRecord:
    return ShapeRecord(schema=SCHEMA, key=work.key, shape=ShapeDesc(**work.describe()), fingerprint=fp, **fields)


def _write(root, record: ShapeRecord) -> None:
    records.write_json(records.shape_path(root, record.key), record)


def _commit(cache, fp: dict, dependents: list[Target]) -> None:
    for target in dependents:
        if records.target_reasons(cache, target.name, target.launch_hash, target.plan_hash, fp):
            with _writes(run_state.current()):  # the other shapes' records still land; the target fails later
                commit.commit_target(target, cache, fp)


def _lock_path(root, work: ShapeWork):
    path = records.state_dir(root) / "locks" / f"{work.key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    # sglang sets this from SGL_DG_USE_NVRTC before deep_gemm loads (compile_utils.py).
    env["DG_JIT_USE_NVRTC"] = env.get("SGL_DG_USE_NVRTC", "0")
    return env
