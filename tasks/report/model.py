"""The run report: what one `doit warm` did to each target, built from markers and records.

The same data feeds the JSON report (this schema, versioned), JUnit XML and the GitHub
step summary. The JSON schema is generated from these types: docs/report.schema.json.
Within one schema_version, fields are only ever added, never removed or changed in meaning.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal, Union

import msgspec

from tasks.plan.targets import FALLBACK, Target
from tasks.state import records
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import Marker, RemoteNote, ShapeRecord

SCHEMA_VERSION = 1
TAIL_LINES = 30

TargetOutcome = Literal["up to date", "rebuilt", "partial", "failed"]
Scalar = Union[str, int, float, bool, None]
Kernels = Annotated[int, msgspec.Meta(ge=0, description="cache entries compiled during this run "
                                                          "(not those pulled from the remote cache)")]
RemotePull = Literal["hit", "miss", "rejected", "error", "incomplete"]
RemotePush = Literal["pushed", "exists", "error"]


class ShapeResult(msgspec.Struct, kw_only=True):
    name: str
    key: str
    outcome: Literal["up to date", "rebuilt", "failed", "other shard"]
    entries: Annotated[int, msgspec.Meta(ge=0, description="cache entries the shape's sweep uses")]
    kernels_compiled: Kernels
    seconds: Annotated[float | None, msgspec.Meta(
        description="from the start of the shape's compile batch until its replay proof ended")] = None
    replay_new_entries: int | None = None
    remote: Annotated[RemotePull | None, msgspec.Meta(
        description="what the remote cache gave this run (none: no remote, or the shape was up to date)")] = None
    pushed: Annotated[RemotePush | None, msgspec.Meta(description="what this run uploaded to the remote")] = None
    error: str | None = None
    log_tail: list[str] = []


class PhaseResult(msgspec.Struct, kw_only=True):
    """A fallback target's steps: the server run, then capturing its shapes into a lock."""

    name: Literal["server", "capture"]
    outcome: Literal["up to date", "passed", "failed", "not run"]
    seconds: float | None = None
    message: str | None = None
    log_tail: list[str] = []


class TargetResult(msgspec.Struct, kw_only=True):
    name: str
    model: str
    path: Literal["planned", "locked", "fallback", "invalid"]
    outcome: TargetOutcome
    reason: Annotated[str, msgspec.Meta(description='why it was rebuilt, why it failed, or "up to date"')]
    kernels_compiled: Annotated[int, msgspec.Meta(
        ge=0, description="cache entries compiled during this run and counted for this target: an entry that "
                          "several targets use counts for the first of them to finish, so the targets' counts "
                          "add up to the total")]
    seconds: Annotated[float, msgspec.Meta(
        ge=0, description="from the start of the run until the target was ready or failed; 0 when up to date")]
    shapes: list[ShapeResult] = []
    phases: list[PhaseResult] = []
    log_tail: list[str] = []


class RemoteTotals(msgspec.Struct, kw_only=True):
    """Shapes this run asked the remote cache for, by outcome, and what it uploaded."""

    url: Annotated[str, msgspec.Meta(description="the remote, without any query string, and its mode")]
    hits: int = 0
    misses: Annotated[int, msgspec.Meta(description="no artifact for the shape and toolchain")] = 0
    rejected: Annotated[int, msgspec.Meta(description="bad sha256, unsafe archive or failed replay")] = 0
    errors: Annotated[int, msgspec.Meta(description="the remote failed or did not answer in time")] = 0
    incomplete: Annotated[int, msgspec.Meta(description="pulled, but the replay compiled what was missing")] = 0
    pushed: int = 0
    push_errors: int = 0


class Totals(msgspec.Struct, kw_only=True):
    targets: int
    up_to_date: int
    rebuilt: int
    partial: int
    failed: int
    kernels_compiled: Kernels
    seconds: Annotated[float, msgspec.Meta(ge=0, description="wall time of the whole run")]
    remote: RemoteTotals | None = None


class Report(msgspec.Struct, kw_only=True):
    schema_version: Literal[1] = SCHEMA_VERSION
    tool: Literal["jitwarm"] = "jitwarm"
    started_at: str
    finished_at: str
    exit_code: int
    cache_root: str
    shard: str | None = None
    fingerprint: dict[str, Scalar]
    totals: Totals
    targets: list[TargetResult]


class TargetRun(msgspec.Struct, kw_only=True):
    """What the doit reporter saw of one target, before it is turned into a result."""

    stale_reasons: list[str]
    finished: bool = False
    failed: bool = False
    failure: str = ""
    seconds: float = 0.0


def json_schema() -> dict:
    schema = msgspec.json.schema(Report)
    schema["$comment"] = "jitwarm run report; regenerate with: python -m tasks.report.model --schema"
    return schema


def encode(report: Report) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=1) + b"\n"


def write(report: Report, path: Path) -> None:
    """Write-then-rename, like every record: a reader never sees half a report."""
    records.replace_file(path, encode(report))


def target_result(target: Target, run: TargetRun, cache: CacheRoot, new: set[str],
                  local_keys: frozenset[str] | None, started_at: str, counted: set[str]) -> TargetResult:
    """`new`: cache entries that appeared during the run; `started_at`: its ISO start time;
    `counted`: the new entries counted for this target (each entry for one target only)."""
    path, root = "invalid" if target.error else target.path, cache.path
    marker, _ = records.read_marker(root, target.name)
    stale = bool(run.stale_reasons)
    if run.failed:
        outcome: TargetOutcome = "failed"
    elif not stale:
        outcome = "up to date"
    elif local_keys is not None and (marker is None or records.target_reasons(
            cache, target.name, target.launch_hash, target.plan_hash, marker.fingerprint)):
        outcome = "partial"
    else:
        outcome = "rebuilt"
    failure = run.failure.splitlines()
    reason = (failure[0] if failure else "failed") if run.failed else (
        "; ".join(run.stale_reasons) if stale else "up to date")
    found = _shape_records(target, root)
    shapes = [_shape_result(w, found[w.key], new, local_keys, started_at, run.failed, stale) for w in target.works]
    phases = _phases(target, run, root, marker) if target.path == FALLBACK and not target.error else []
    tail = [line.removeprefix("  | ") for line in failure[1:]][-TAIL_LINES:]
    return TargetResult(name=target.name, model=target.model, path=path, outcome=outcome, reason=reason,
                        kernels_compiled=len(counted), seconds=round(run.seconds, 3),
                        shapes=shapes, phases=phases, log_tail=tail)


def used_entries(target: Target, root: Path) -> set[str]:
    """The cache entries the target uses, as its marker and its shapes' records say."""
    marker, _ = records.read_marker(root, target.name)
    return _used_entries(marker, _shape_records(target, root))


def _shape_records(target: Target, root: Path) -> dict[str, tuple[ShapeRecord | None, str | None]]:
    return {w.key: records.read_shape(root, w.key) for w in target.works}


def _used_entries(marker: Marker | None, found: dict) -> set[str]:
    used = set(marker.entries) if marker else set()
    for record, _ in found.values():
        used |= set(record.entries) if record else set()
    return used


def _shape_result(work, found: tuple[ShapeRecord | None, str | None], new: set[str], local_keys, started_at: str,
                  failed: bool, stale: bool) -> ShapeResult:
    base = {"name": work.name, "key": work.key}
    if local_keys is not None and work.key not in local_keys:
        return ShapeResult(**base, outcome="other shard", entries=0, kernels_compiled=0)
    record, why = found
    if record is None:  # the marker alone holds a target up to date; a failed one names it
        return ShapeResult(**base, outcome="failed" if failed else "up to date", entries=0, kernels_compiled=0,
                           error=("never warmed" if why == "missing" else f"shape record {why}") if failed else None)
    names = set(record.entries)
    common = {"entries": len(names), "kernels_compiled": len(names & new), "seconds": record.seconds}
    remote = record.remote or RemoteNote()
    if not record.ok:
        pull = remote.pull if stale and remote.pull else None
        return ShapeResult(**base, **common, outcome="failed", error=record.error or "unknown error",
                           log_tail=record.log_tail[-TAIL_LINES:], remote=pull.status if pull else None)
    # Only a stale target's shapes can have been rebuilt; timestamps have one-second resolution.
    this_run = stale and (record.finished_at or "") >= started_at
    return ShapeResult(**base, **common, outcome="rebuilt" if this_run else "up to date",
                       replay_new_entries=record.replay.new_entries if record.replay else None,
                       remote=remote.pull.status if this_run and remote.pull else None,
                       pushed=remote.push.status if this_run and remote.push else None)


def _phases(target: Target, run: TargetRun, root: Path, marker: Marker | None) -> list[PhaseResult]:
    log = records.log_path(root, f"fallback-{target.name}")
    if not run.stale_reasons and not run.failed:
        return [PhaseResult(name="server", outcome="up to date"), PhaseResult(name="capture", outcome="up to date")]
    tail = records.log_tail(log, TAIL_LINES)
    if run.failed:
        message = run.failure.splitlines()[0] if run.failure else "failed"
        return [PhaseResult(name="server", outcome="failed", seconds=round(run.seconds, 3), message=message,
                            log_tail=tail),
                PhaseResult(name="capture", outcome="not run")]
    seconds = marker.seconds.get("server") if marker else None
    shapes = marker.captured_shapes if marker else []
    lock = (marker.lock if marker else None) or "the lock"
    return [PhaseResult(name="server", outcome="passed", seconds=seconds, log_tail=tail),
            PhaseResult(name="capture", outcome="passed", message=f"{len(shapes)} shapes into {lock}")]


def totals(results: list[TargetResult], new: set[str], seconds: float, remote: str | None = None) -> Totals:
    count = {o: sum(r.outcome == o for r in results) for o in ("up to date", "rebuilt", "partial", "failed")}
    return Totals(targets=len(results), up_to_date=count["up to date"], rebuilt=count["rebuilt"],
                  partial=count["partial"], failed=count["failed"], kernels_compiled=len(new),
                  seconds=round(seconds, 3), remote=remote_totals(results, remote) if remote else None)


def remote_totals(results: list[TargetResult], url: str) -> RemoteTotals:
    """Counted per distinct shape: targets share shapes."""
    shapes = {s.key: s for r in results for s in r.shapes}.values()
    pulls = Counter(s.remote for s in shapes if s.remote)
    pushes = Counter(s.pushed for s in shapes if s.pushed)
    return RemoteTotals(url=url, hits=pulls["hit"], misses=pulls["miss"], rejected=pulls["rejected"],
                        errors=pulls["error"], incomplete=pulls["incomplete"], pushed=pushes["pushed"],
                        push_errors=pushes["error"])


def pulled_entries(targets: list[Target], root: Path) -> set[str]:
    """Entries the remote cache brought in, as the shape records say: not compiled here."""
    names: set[str] = set()
    for work in {w.key: w for t in targets for w in t.works}.values():
        record, _ = records.read_shape(root, work.key)
        if record and record.remote and record.remote.pull:
            names.update(record.remote.pull.published)
    return names


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--schema"]:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(json_schema()), indent=2).decode() + "\n")
    else:
        sys.exit("usage: python -m tasks.report.model --schema")
