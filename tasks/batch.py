"""Warm shapes in batches: compile all their kernels in parallel, then prove each shape.

Shape tasks only queue their shape; the first target task to run flushes the queue.
doit runs every selected shape task before any target task, so one batch holds every
stale shape of the run and the compile pool sees all of them at once.

Per shape, a file lock keeps two `doit warm` processes on one cache root from warming
it twice: the second waits and reuses the first one's record. After the compile pool,
each shape's full sweep is replayed in a fresh process against a private view of the
cache (tasks/worker.py): it attributes the entries the shape uses and must compile
nothing. A replay that compiles something is a failed warm, unless the pool could not
finish that shape (then the replay completes it).
"""

from __future__ import annotations

import os
import sys
import uuid

import filelock

from . import cacheview, fingerprint, mlists, pool, records, supervise, warm, worker
from .settings import REPO_ROOT
from .targets import ShapeWork, Target

_pending: dict[str, tuple[ShapeWork, list[Target]]] = {}
_main_pid = os.getpid()


def enqueue(work: ShapeWork, ctx: warm.Context, dependents: list[Target] = ()) -> None:
    """doit action of a shape task."""
    if os.getpid() != _main_pid:
        run(ctx, [(work, list(dependents))])  # a `doit -n` worker process: no shared queue
        return
    _pending[work.key] = (work, list(dependents))
    print(f"queued {work.name} ({len(work.m_values)} M values)", flush=True)


def flush(ctx: warm.Context) -> None:
    if _pending:
        items = list(_pending.values())
        _pending.clear()
        run(ctx, items)


def run(ctx: warm.Context, items: list[tuple[ShapeWork, list[Target]]]) -> None:
    root, fp = ctx.root.path, fingerprint.current()
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
        _warm(ctx, fp, [(w, d) for w, d, _ in mine if records.shape_reasons(root, w.key, fp)])
        for work, dependents, _ in mine:
            _commit(ctx, fp, dependents)
    finally:
        for _, _, lock in mine:
            lock.release()
    for work, dependents, lock in theirs:
        print(f"{work.name}: another process is warming it; waiting", flush=True)
        with lock.acquire(timeout=ctx.shape_timeout_s):
            if records.shape_reasons(root, work.key, fp):
                _warm(ctx, fp, [(work, dependents)])
            else:
                print(f"{work.name}: reusing the concurrent warm's result", flush=True)
            _commit(ctx, fp, dependents)


def _warm(ctx: warm.Context, fp: dict, items: list[tuple[ShapeWork, list[Target]]]) -> None:
    if not items:
        return
    root = ctx.root.path
    works = [w for w, _ in items]
    store = pool.store_for(root, fp, max_age_s=2 * ctx.shape_timeout_s)
    _compile_and_replay(ctx, fp, items, works, store)
    for _, dependents in items:
        _commit(ctx, fp, dependents)


def _compile_and_replay(ctx, fp, items, works, store) -> None:
    root = ctx.root.path
    report = pool.compile_all(works, root, fp, ctx.settings, _worker_env(), store)
    runnable = [w for w in works if report.m_values[w.key] and w.key not in report.failures]
    for work in works:
        if work not in runnable:
            _write(root, work, fp, {"ok": False, **report.failures.get(work.key, {"error": "not warmed"})})
    # Replays in waves that fit GPU memory; each in its own process and private view.
    for start in range(0, len(runnable), report.replay_slots):
        wave = runnable[start:start + report.replay_slots]
        jobs = [_replay_job(root, w, report.m_values[w.key], ctx, fp["deep_gemm.module"], store) for w in wave]
        try:
            outcomes = supervise.run_all([job for job, _ in jobs])
            results = [records.read_json(staging / "result.json")[0] for _, staging in jobs]
        finally:
            for _, staging in jobs:
                cacheview.salvage(staging, root)
        for work, outcome, result in zip(wave, outcomes, results):
            record = _replay_record(work, outcome, result, report)
            _write(root, work, fp, record)
            if record["ok"]:
                print(f"warmed {work.name}: {len(record['entries'])} entries, replay compiled "
                      f"{len(record['new'])}", flush=True)
            for target in next(d for w, d in items if w.key == work.key):
                if record["ok"]:
                    _commit(ctx, fp, [target])


def _replay_job(root, work: ShapeWork, m_values, ctx, module: str, store) -> tuple[supervise.Job, object]:
    staging = records.state_dir(root) / "staging" / f"{work.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging.mkdir(parents=True)
    plan_file = staging / "plan.json"
    records.write_json(plan_file, {
        "schema": records.SCHEMA, "root": str(root), "staging": str(staging), "module": module,
        "shape": {"kind": work.shape.kind.value, "n": work.shape.n, "k": work.shape.k, "groups": work.shape.groups},
        "m_values": list(m_values), "contig_alignment": mlists.CONTIG_ALIGNMENT})
    argv = [sys.executable, "-m", "tasks.worker", str(plan_file), str(staging / "result.json")]
    job = supervise.Job(argv, pool.shim_env(store, _worker_env()), records.log_path(root, work.name),
                        ctx.shape_timeout_s, cwd=REPO_ROOT)
    return job, staging


def _replay_record(work: ShapeWork, outcome: supervise.Outcome, result: dict | None, report: pool.Report) -> dict:
    log = outcome.log
    base = {"finished_at": warm.now(), "log": str(log), "seconds": round(outcome.seconds, 3),
            "pool": {"workers": report.workers, "seconds": report.seconds, "compiled": report.compiled,
                     "deferred": report.deferred, "complete": work.key in report.complete}}
    if work.key in report.reduced:
        base["reduced_max_m"] = report.reduced[work.key]
        base["m_count"] = len(report.m_values[work.key])
    tail = outcome.tail()
    if outcome.returncode == 0 and result is not None:
        record = {**base, **result, "ok": True, "replay": {"new_entries": len(result["new"]),
                                                          "calls": result["calls"],
                                                          "seconds": result["sweep_seconds"]}}
        if result["new"] and work.key in report.complete:
            record.update(ok=False, error=f"replay compiled {len(result['new'])} new entries after the warm; "
                                          f"the warm missed kernels (they are kept: warm again)")
        return record
    if outcome.returncode == worker.EXIT_ENV and not outcome.timed_out:
        line = next((ln for ln in reversed(tail) if ln.startswith("jitwarm worker: ")), tail[-1] if tail else "")
        return {**base, "ok": False, "error": line.removeprefix("jitwarm worker: "), "log_tail": []}
    return {**base, "ok": False, "error": f"worker {outcome.describe()} (log {log})", "log_tail": tail}


def _write(root, work: ShapeWork, fp: dict, fields: dict) -> None:
    record = {"schema": records.SCHEMA, "key": work.key, "shape": work.describe(), "fingerprint": fp, **fields}
    records.write_json(records.shape_path(root, work.key), record)


def _commit(ctx: warm.Context, fp: dict, dependents: list[Target]) -> None:
    root = ctx.root.path
    for target in dependents:
        if records.target_reasons(root, target.name, target.launch_hash, target.plan_hash, fp):
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
