"""Target side of `doit warm`: preflight, and a target's marker from its shapes' records.

Shapes are warmed in batches (tasks/batch.py) and never raise into doit: they record
success or failure, and the targets that need a shape fail with its reason. That keeps
one bad shape from turning into doit errors, and puts the reason on every target it affects.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from doit.exceptions import TaskFailed

from tasks import session as events
from tasks.host import fingerprint
from tasks.state import records
from tasks.state.cacheroot import CacheRoot
from tasks.host.settings import Settings
from tasks.plan.targets import Target


@dataclass(frozen=True)
class Context:
    root: CacheRoot
    settings: Settings

    @property
    def shape_timeout_s(self) -> float:
        return self.settings.shape_timeout_s


def now() -> str:
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
    if fp.get("deep_gemm.layout") == "0.2.x":  # DeepJIT: nvcc only, at least 12.9 (backend.hpp)
        release = tuple(int(part) for part in (fp.get("nvcc") or "0.0").split(".")[:2])
        if fp.get("nvcc") is None:
            return "nvcc not found (set CUDA_HOME or DG_JIT_NVCC_COMPILER); sgl-deep-gemm 0.2.x has no NVRTC"
        if release < (12, 9):
            return f"nvcc {fp['nvcc']} is too old: sgl-deep-gemm 0.2.x needs nvcc 12.9 or newer"
    elif fp.get("nvcc") is None and os.environ.get("SGL_DG_USE_NVRTC", "0") == "0":
        return "nvcc not found (set CUDA_HOME or DG_JIT_NVCC_COMPILER)"
    return None


def finish_target(target: Target, ctx: Context, local_keys: frozenset[str] | None = None):
    """doit action: commit the marker, or fail with each unwarmed shape's reason.

    Under sharding, `local_keys` names the target's shapes this shard warms; when only
    the other shards' shapes are missing, the target's part here succeeded.
    """
    if target.error:
        return TaskFailed(target.error)
    if target.works and (problem := preflight(fingerprint.current())):
        return TaskFailed(problem)  # one line, not one per shape
    from tasks.build import batch  # the queued shapes of this run: warm them all at once
    batch.flush(ctx)
    fp = fingerprint.current()
    if not records.target_reasons(ctx.root, target.name, target.launch_hash, target.plan_hash, fp):
        return None  # the batch committed it
    failures = commit_target(target, ctx)
    if failures and local_keys is not None:
        if not any(records.shape_reasons(ctx.root, w.key, fp) for w in target.works if w.key in local_keys):
            print(f"{target.name}: partial, {len(local_keys)} of {len(target.works)} shapes warmed in this "
                  f"shard; the marker is written where every shard's shapes are in one cache root", flush=True)
            return None
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
        reasons = records.shape_reasons(ctx.root, work.key, fp)
        record, _ = records.read_json(records.shape_path(root, work.key))
        if reasons:
            failures.append(f"shape {work.name}: {reasons[0]}")
            tails += [f"  | {line}" for line in (record or {}).get("log_tail") or []]
            continue
        merged.update(record["entries"])
        shapes.append({**work.describe(), "entries": sorted(record["entries"]), "new": record.get("new", []),
                       "seconds": record.get("seconds"), "verification": record.get("verification"),
                       "replay": record.get("replay"), "reduced_max_m": record.get("reduced_max_m")})
    if failures:
        return failures + tails + ([target.unsupported_line] if target.unsupported else [])
    if target.unsupported:
        return [target.unsupported_line]  # no marker: those kernels are not in the cache
    write_marker(target, root, fp, merged, target.plan_hash, path=target.path, shapes=shapes,
                 seconds={"warm": max((s["seconds"] or 0 for s in shapes), default=0),
                          "replays": round(sum((s["replay"] or {}).get("seconds", 0) for s in shapes), 3)})
    print(f"{target.name}: up to date, {len(target.works)} shapes, {len(merged)} entries", flush=True)
    events.emit("target_ready", name=target.name)
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
        "warmed_at": now(), **extra,
    }
    records.write_json(records.marker_path(root, target.name), marker)
    for old in records.superseded(root, target.name, target.model, target.launch_index):
        old.unlink(missing_ok=True)
