"""The side effects of `doit warm`: run a shape's worker, then write a target's marker.

Shape actions never raise into doit: they record success or failure in the shape record,
and the targets that need the shape fail with its reason. That keeps one bad shape from
turning into doit errors, and puts the reason on every target it affects.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from doit.exceptions import TaskFailed

from . import cacheview, fingerprint, mlists, records, supervise, worker
from .cacheroot import CacheRoot
from .settings import REPO_ROOT
from .targets import ShapeWork, Target


@dataclass(frozen=True)
class Context:
    root: CacheRoot
    shape_timeout_s: float


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def preflight(fp: dict) -> str | None:
    """One line saying why no warm can run here, or None."""
    module = fp["deep_gemm.module"]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"{module} is not installed for {sys.executable} (pip install sgl-deep-gemm on a GPU host)"
    if module != "deep_gemm":
        return None  # a test stand-in needs no GPU
    if fp.get("gpu.arch") is None:
        return "no NVIDIA GPU visible (nvidia-smi reported none)"
    if fp.get("nvcc") is None and os.environ.get("SGL_DG_USE_NVRTC", "0") == "0":
        return "nvcc not found (set CUDA_HOME or DG_JIT_NVCC_COMPILER)"
    return None


def warm_shape(work: ShapeWork, ctx: Context, dependents: list[Target] = ()) -> None:
    root = ctx.root.path
    fp = fingerprint.current()
    base = {"schema": records.SCHEMA, "key": work.key, "shape": work.describe(), "fingerprint": fp,
            "finished_at": None}
    problem = preflight(fp)
    if problem:
        records.write_json(records.shape_path(root, work.key), {**base, "ok": False, "error": problem})
        return
    log = records.log_path(root, work.name)
    staging = records.state_dir(root) / "staging" / f"{work.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging.mkdir(parents=True)
    plan_file, result_file = staging / "plan.json", staging / "result.json"
    plan = {"root": str(root), "staging": str(staging), "module": fp["deep_gemm.module"],
            "shape": {"kind": work.shape.kind.value, "n": work.shape.n, "k": work.shape.k,
                      "groups": work.shape.groups},
            "m_values": list(work.m_values), "contig_alignment": mlists.CONTIG_ALIGNMENT}
    records.write_json(plan_file, {"schema": records.SCHEMA, **plan})
    print(f"warming {work.name}: {len(work.m_values)} M values, log {log}", flush=True)
    try:
        outcome = supervise.run([sys.executable, "-m", "tasks.worker", str(plan_file), str(result_file)],
                                _worker_env(), log, ctx.shape_timeout_s, cwd=REPO_ROOT)
        record = _record(base, outcome, result_file, log)
    finally:
        cacheview.salvage(staging, root)
    records.write_json(records.shape_path(root, work.key), record)
    if record["ok"]:
        print(f"warmed {work.name}: {len(record['entries'])} entries ({len(record['new'])} new) "
              f"in {record['seconds']:.1f}s", flush=True)
        for target in dependents:
            if not records.target_reasons(root, target.name, target.launch_hash, target.plan_hash, fp):
                continue  # already committed
            commit_target(target, ctx)


def _record(base: dict, outcome: supervise.Outcome, result_file: Path, log: Path) -> dict:
    base = {**base, "finished_at": _now(), "log": str(log), "seconds": round(outcome.seconds, 3)}
    tail = outcome.tail()
    if outcome.returncode == 0 and result_file.is_file():
        result, _ = records.read_json(result_file)
        if result is not None:
            return {**base, **result, "ok": True}
    if outcome.returncode == worker.EXIT_ENV and not outcome.timed_out:
        line = next((ln for ln in reversed(tail) if ln.startswith("jitwarm worker: ")), tail[-1] if tail else "")
        return {**base, "ok": False, "error": line.removeprefix("jitwarm worker: "), "log_tail": []}
    return {**base, "ok": False, "error": f"worker {outcome.describe()} (log {log})", "log_tail": tail}


def _worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    # sglang sets this from SGL_DG_USE_NVRTC before deep_gemm loads (compile_utils.py).
    env["DG_JIT_USE_NVRTC"] = env.get("SGL_DG_USE_NVRTC", "0")
    return env


def finish_target(target: Target, ctx: Context):
    """doit action: commit the marker, or fail with each unwarmed shape's reason."""
    if target.error:
        return TaskFailed(target.error)
    if target.works and (problem := preflight(fingerprint.current())):
        return TaskFailed(problem)  # one line, not one per shape
    failures = commit_target(target, ctx)
    return TaskFailed("\n".join(failures)) if failures else None


def commit_target(target: Target, ctx: Context) -> list[str]:
    """Write the target's marker if all its shapes hold; else return why not (and log tails).

    Shape actions call this for their dependents as soon as they finish, so a target's
    marker lands the moment its last shape does, whatever order doit runs tasks in.
    """
    root = ctx.root.path
    fp = fingerprint.current()
    failures, tails, merged, shapes = [], [], {}, []
    for work in target.works:
        reasons = records.shape_reasons(root, work.key, fp)
        record, _ = records.read_json(records.shape_path(root, work.key))
        if reasons:
            failures.append(f"shape {work.name}: {reasons[0]}")
            tails += [f"  | {line}" for line in (record or {}).get("log_tail") or []]
            continue
        merged.update(record["entries"])
        shapes.append({**work.describe(), "entries": sorted(record["entries"]), "new": record.get("new", []),
                       "seconds": record.get("seconds"), "verification": record.get("verification")})
    if failures:
        return failures + tails
    write_marker(target, root, fp, merged, target.plan_hash, path=target.path, shapes=shapes,
                 seconds={"shapes": round(sum(s["seconds"] or 0 for s in shapes), 3)})
    print(f"{target.name}: up to date, {len(target.works)} shapes, {len(merged)} entries", flush=True)
    return []


def write_marker(target: Target, root: Path, fp: dict, used: dict, plan_hash: str | None, **extra) -> None:
    """The target's marker, written by rename; superseded markers of its launch tuple go."""
    marker = {
        "schema": records.SCHEMA, "target": target.name, "model": target.model, "hf_id": target.hf_id,
        "tp": target.tp, "launch_index": target.launch_index, "launch_args": list(target.args),
        "launch_hash": target.launch_hash, "plan_hash": plan_hash,
        "m_list": target.m_policy.describe() if target.m_policy else None,
        "fingerprint": fp, "cache_root": str(root), "entries": used,
        "verified": "each entry's source and non-empty binary exist; binary sizes recorded",
        "warmed_at": _now(), **extra,
    }
    records.write_json(records.marker_path(root, target.name), marker)
    for old in records.superseded(root, target.name, target.model, target.launch_index):
        old.unlink(missing_ok=True)
