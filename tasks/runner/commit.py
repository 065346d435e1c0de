"""A target's marker, committed from its shapes' records the moment they all hold.

Shapes are warmed in batches (tasks/runner/batch.py) and never raise into doit: they record
success or failure, and the targets that need a shape fail with its reason. That keeps
one bad shape from turning into doit errors, and puts the reason on every target it affects.
"""

from __future__ import annotations

from tasks import session
from tasks.plan.targets import Target
from tasks.state import records
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import SCHEMA, Entry, Marker, MarkerShape


def commit_target(target: Target, cache: CacheRoot, fp: dict) -> list[str]:
    """Write the target's marker if all its shapes hold; else return why not (and log tails).

    Shape actions call this for their dependents as soon as they finish, so a target's
    marker lands the moment its last shape does, whatever order doit runs tasks in.
    """
    root = cache.path
    failures, tails, merged, shapes = [], [], {}, []
    for work in target.works:
        reasons = records.shape_reasons(cache, work.key, fp)
        record, _ = records.read_shape(root, work.key)
        if reasons:
            failures.append(f"shape {work.name}: {reasons[0]}")
            tails += [f"  | {line}" for line in record.log_tail] if record else []
            continue
        merged.update(record.entries)
        shapes.append(MarkerShape(**work.describe(), entries=sorted(record.entries), new=record.new,
                                  seconds=record.seconds, verification=record.verification, replay=record.replay,
                                  reduced_max_m=record.reduced_max_m))
    if failures:
        return failures + tails + ([target.unsupported_line] if target.unsupported else [])
    if target.unsupported:
        return [target.unsupported_line]  # no marker: those kernels are not in the cache
    write_marker(target, cache, fp, merged, target.plan_hash, path=target.path, shapes=shapes,
                 seconds={"warm": max((s.seconds or 0 for s in shapes), default=0),
                          "replays": round(sum(s.replay.seconds for s in shapes if s.replay), 3)})
    session.emit("target_ready", name=target.name)  # the reporter prints "[i/n] rebuilt <target>"
    return []


def write_marker(target: Target, cache: CacheRoot, fp: dict, used: dict[str, Entry], plan_hash: str | None,
                 **extra) -> None:
    """The target's marker, written by rename; superseded markers of its launch tuple go.
    `extra`: the Marker fields of how it was warmed (path, shapes, seconds, lock, ...)."""
    root = cache.path
    marker = Marker(
        schema=SCHEMA, target=target.name, model=target.model, hf_id=target.hf_id, tp=target.tp,
        launch_index=target.launch_index, launch_args=list(target.args), launch_hash=target.launch_hash,
        plan_hash=plan_hash, m_list=target.m_policy.describe() if target.m_policy else None,
        fingerprint=fp, cache_root=str(root), entries=used,
        verified=f"each entry complete as {cache.layout.title} defines it; binary sizes recorded",
        warmed_at=records.now(), **extra)
    records.write_json(records.marker_path(root, target.name), marker)
    for old in records.superseded(root, target.name, target.model, target.launch_index):
        old.unlink(missing_ok=True)
