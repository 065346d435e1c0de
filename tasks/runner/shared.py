"""The parent's side of the shared replays of pulled shapes (tasks/runner/child/shared_replay.py):
what the processes work from, and each pulled shape's outcome from its pieces' results.
"""

from __future__ import annotations

from pathlib import Path

from tasks.runner.child.protocol import (CAPTURE_CHUNK, CAPTURED, PieceResult, PieceStatus, Shape, SharedShape,
                                        SharedSpec, piece_path, status_path)
from tasks.plan import mlists, schedule
from tasks.state import entries, records
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import Replayed


def spec(where: Path, cache: CacheRoot, module: str, shapes: list[tuple[Shape, tuple[int, ...]]],
         slots: int, ready: list[str] = ()) -> SharedSpec:
    """What the shared replay processes of the pulled shapes work from; `ready`: each shape's
    file that appears once its entries are in, or "" (see SharedSpec)."""
    where.mkdir()
    lengths = [len(m_values) for _, m_values in shapes]
    processes = schedule.processes(sum(lengths), slots)
    pieces = schedule.pieces(lengths, processes, CAPTURE_CHUNK)
    return SharedSpec(dir=str(where), cache=cache.as_plan(), module=module, contig_alignment=mlists.CONTIG_ALIGNMENT,
                      shapes=[SharedShape(shape, list(m_values)) for shape, m_values in shapes], pieces=pieces,
                      processes=min(processes, len(pieces)), pool_log=str(records.log_path(cache.path, "pool")),
                      ready=list(ready) if any(ready) else [])


def outcome(spec: SharedSpec, s: int, expected: list[str], cache: CacheRoot, pool_ended: str | None = None,
            source: str = "remote manifest"):
    """(status, result or None, log) of pulled shape `s` once each of its pieces has a
    result or a status; None while some are still running. With `pool_ended` (how the
    pool ended), pieces with neither count as not run. `source`: where `expected` came from."""
    found: list[tuple[PieceResult | None, PieceStatus | None]] = []
    for i, (shape, _, _) in enumerate(spec.pieces):
        if shape != s:
            continue
        result = records.read_message(piece_path(spec, i), PieceResult)
        status = None if result is not None else records.read_message(status_path(spec, i), PieceStatus)
        if result is None and status is None:
            if pool_ended is None:
                return None
            status = PieceStatus(f"did not run: the pool {pool_ended}", spec.pool_log)
        found.append((result, status))
    for result, status in found:
        if status is not None:
            return status.how, None, Path(status.log)
        if result.error is not None:
            return f"failed: {result.error}", None, Path(result.log)
    done = [result for result, _ in found if not result.skipped]
    opened = {name for r in done for name in r.opened}
    created = sorted({name for r in done for name in r.created})
    described = {}
    for name in sorted(set(expected) | opened | set(created)):
        desc = entries.describe(cache, name)
        if desc is None:
            return f"failed: entry {name} is incomplete after the replay", None, Path(spec.pool_log)
        described[name] = desc
    how = f"{source}, plus entries its calls opened or created (shared replay processes)"
    if not all(r.sees_opens for r in done):
        how = f"{source}, plus entries its calls created (opens not seen: inotify unavailable)"
    captured = all(r.launches == CAPTURED for r in done)
    result = Replayed(entries=described, new=created, calls=sum(r.calls for r in done),
                      sweep_seconds=round(sum(r.seconds for r in done), 3), verification=how,
                      launches="captured, not run (first and last M of each piece run)" if captured else "run",
                      pieces=len(done), processes=len({r.log for r in done}))
    return "exited with code 0", result, Path(done[0].log)
