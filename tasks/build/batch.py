"""Warm shapes in batches: compile all their kernels in parallel, then prove each shape.

Shape tasks only queue their shape; the first target task to run flushes the queue.
doit runs every selected shape task before any target task, so one batch holds every
stale shape of the run and the compile pool sees all of them at once.

Per shape, a file lock keeps two `doit warm` processes on one cache root from warming
it twice: the second waits and reuses the first one's record. After the compile pool,
each shape's full sweep is replayed in a fresh process against a private view of the
cache (tasks/worker.py): it attributes the entries the shape uses and must compile
nothing. A replay that compiles something is a failed warm, unless the pool could not
finish that shape (then the replay completes it). Shapes pulled from the remote cache
skip the compile pool and share a few replay processes (tasks/shared_replay.py).
"""

from __future__ import annotations

import os
import shutil
import time

import filelock

from tasks.state import entries
from tasks import session as events
from tasks.host import fingerprint
from tasks.build import pool
from tasks.state import records
from tasks.remote import sync as remote_cache
from tasks.build import commit as warm
from tasks.build.child import replay as worker
from tasks.host.settings import REPO_ROOT
from tasks.plan.targets import ShapeWork, Target

_pending: dict[str, tuple[ShapeWork, list[Target]]] = {}


def enqueue(work: ShapeWork, ctx: warm.Context, dependents: list[Target] = ()) -> None:
    """doit action of a shape task."""
    from tasks.cli.doit_tasks import MAIN_PID

    if os.getpid() != MAIN_PID:
        run(ctx, [(work, list(dependents))])  # a `doit -n` worker process: no shared queue
        return
    fp = fingerprint.current()
    if not _pending and warm.preflight(fp) is None:
        # There is work: start the pool's process now, so its torch import overlaps the
        # rest of the queueing and the remote pulls.
        pool.prestart(ctx.root, fp, ctx.settings, _worker_env())
    _pending[work.key] = (work, list(dependents))
    print(f"queued {work.name} ({len(work.m_values)} M values)", flush=True)


def flush(ctx: warm.Context) -> None:
    if _pending:
        items = list(_pending.values())
        _pending.clear()
        try:
            run(ctx, items)
        finally:
            pool.stop_standby()  # unused if every shape was warmed by a concurrent run


def run(ctx: warm.Context, items: list[tuple[ShapeWork, list[Target]]]) -> None:
    cache, root, fp = ctx.root, ctx.root.path, fingerprint.current()
    if problem := warm.preflight(fp):
        for work, _ in items:
            _write(root, work, fp, {"ok": False, "error": problem})
        return
    mine, theirs = [], []
    for work, dependents in items:
        lock = filelock.FileLock(str(_lock_path(root, work)))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            theirs.append((work, dependents, lock))
            continue
        mine.append((work, dependents, lock))
    try:
        _warm(ctx, fp, [(w, d) for w, d, _ in mine if records.shape_reasons(cache, w.key, fp)])
        for work, dependents, _ in mine:
            _commit(ctx, fp, dependents)
    finally:
        for _, _, lock in mine:
            lock.release()
    for work, dependents, lock in theirs:
        print(f"{work.name}: another process is warming it; waiting", flush=True)
        with lock.acquire(timeout=ctx.shape_timeout_s):
            if records.shape_reasons(cache, work.key, fp):
                _warm(ctx, fp, [(work, dependents)])
            else:
                print(f"{work.name}: reusing the concurrent warm's result", flush=True)
            _commit(ctx, fp, dependents)


def _warm(ctx: warm.Context, fp: dict, items: list[tuple[ShapeWork, list[Target]]],
          pulls: dict[str, remote_cache.Outcome] | None = None) -> None:
    """Compile and replay `items`; record each shape and commit its targets as it lands.

    With a remote cache, shapes are pulled first and only replayed; a pulled shape whose
    replay fails loses what the pull brought and is compiled locally (`pulls` then holds
    the first attempt's outcomes and the remote is not asked again).
    """
    if not items:
        return
    root = ctx.root.path
    if pulls is None:
        for line in entries.remove_broken(ctx.root):  # else they would block their own rebuild
            print(line, flush=True)
    works = [w for w, _ in items]
    dependents = {w.key: d for w, d in items}
    shared = remote_cache.for_settings(ctx.settings)
    scratch = root / "tmp" / f"jitwarm-remote-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        if pulls is None:
            pulls = remote_cache.pull(shared, works, ctx.root, fp, scratch)
            replay_only = {key: outcome.names for key, outcome in pulls.items() if outcome.status == "hit"}
        else:
            replay_only = {}
        store = pool.store_for(root, fp, max_age_s=2 * ctx.shape_timeout_s)
        report = pool.Report()  # pool.run fills it in before the first replay is delivered
        recorded: dict[str, dict] = {}
        retry: list[tuple[ShapeWork, list[Target]]] = []

        def on_replay(work: ShapeWork, replay: pool.Replay) -> None:
            # Record each shape as its replay ends, and commit targets as soon as they hold.
            record = _replay_record(work, replay, report)
            if work.key in replay_only and not remote_cache.accept_replay(pulls[work.key], record):
                retry.append((work, dependents[work.key]))
                return  # compiled locally below
            if work.key in pulls:
                record["remote"] = {"pull": pulls[work.key].as_record()}
            _write(root, work, fp, record)
            recorded[work.key] = record
            events.emit("shape_done", key=work.key, ok=record["ok"])
            if record["ok"]:
                print(f"warmed {work.name}: {len(record['entries'])} entries, replay compiled "
                      f"{len(record['new'])}", flush=True)
                _commit(ctx, fp, dependents[work.key])

        pool.run(works, ctx.root, fp, ctx.settings, _worker_env(), store, on_replay, report, replay_only)
        retried = {w.key for w, _ in retry}
        for work in works:
            if work.key not in recorded and work.key not in retried:
                record = {"ok": False, **report.failures.get(work.key, {"error": "not warmed"})}
                if work.key in pulls:  # e.g. rejected by its replay, then failed locally too
                    record["remote"] = {"pull": pulls[work.key].as_record()}
                _write(root, work, fp, record)
                events.emit("shape_done", key=work.key, ok=False)
        if retry:
            remote_cache.discard_pulled(root, [pulls[w.key] for w, _ in retry])
            _warm(ctx, fp, retry, pulls)
        if shared is not None and shared.config.writable:
            _push(ctx, fp, shared, {w.key: w for w in works}, recorded, pulls, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _push(ctx, fp, shared, works: dict, recorded: dict, pulls: dict, scratch) -> None:
    """Upload the shapes this batch compiled (not those the remote gave it)."""
    todo = [(works[key], sorted(record["entries"])) for key, record in recorded.items()
            if record["ok"] and getattr(pulls.get(key), "status", None) != "hit"]
    remote_cache.push(shared, todo, ctx.root, fp, scratch)


def _replay_record(work: ShapeWork, replay: pool.Replay, report: pool.Report) -> dict:
    base = {"finished_at": warm.now(), "log": str(replay.log),
            "seconds": round(time.monotonic() - report.started, 3),  # this shape's batch, so far
            "pool": {"workers": report.workers, "compiled": report.compiled, "deferred": report.deferred,
                     "complete": work.key in report.complete, "timings": report.timings,
                     "kernel_seconds": report.kernel_seconds}}
    if work.key in report.reduced:
        base["reduced_max_m"] = report.reduced[work.key]
        base["m_count"] = len(report.m_values[work.key])
    result, tail = replay.result, replay.tail()
    if result is not None:
        record = {**base, **result, "ok": True,
                  "replay": {"new_entries": len(result["new"]), "calls": result["calls"],
                             "seconds": result["sweep_seconds"]}}
        if result["new"] and work.key in report.complete:
            record.update(ok=False, error=f"replay compiled {len(result['new'])} new entries after the warm; "
                                          f"the warm missed kernels (they are kept: warm again)")
        return record
    if work.key in report.failures:
        return {**base, "ok": False, **report.failures[work.key]}
    if replay.status == f"exited with code {worker.EXIT_ENV}":
        error = worker.problem_line(tail) or (tail[-1] if tail else replay.status)
        return {**base, "ok": False, "error": error, "log_tail": []}
    return {**base, "ok": False, "error": f"replay {replay.status} (log {replay.log})", "log_tail": tail}


def _write(root, work: ShapeWork, fp: dict, fields: dict) -> None:
    record = {"schema": records.SCHEMA, "key": work.key, "shape": work.describe(), "fingerprint": fp, **fields}
    records.write_json(records.shape_path(root, work.key), record)


def _commit(ctx: warm.Context, fp: dict, dependents: list[Target]) -> None:
    for target in dependents:
        if records.target_reasons(ctx.root, target.name, target.launch_hash, target.plan_hash, fp):
            warm.commit_target(target, ctx)


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
