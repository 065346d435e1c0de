"""The remote cache as one warm batch uses it: pull before compiling, push after.

Everything here degrades to a warning: a remote that is missing, down, slow or serving a
bad artifact only means the shape compiles locally (tasks/remote.py holds the store).
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

from tasks import session
from tasks.host.settings import RemoteConfig, Settings
from tasks.remote.store import Transfer, Remote
from tasks.state import entries, records
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import RemoteNote, ShapeRecord


def for_settings(settings: Settings) -> Remote | None:
    return _remote(settings.remote) if settings.remote is not None else None


@functools.lru_cache(maxsize=2)
def _remote(config: RemoteConfig) -> Remote:
    return Remote(config)  # one per run, so a remote found down stays skipped


def pull(remote: Remote | None, works, cache: CacheRoot, fp: dict, scratch: Path) -> dict[str, Transfer]:
    if remote is None or not works:
        return {}
    outcomes = remote.pull_many(works, cache, fp, scratch)
    session.emit("pulled", names=[name for outcome in outcomes.values() for name in outcome.published])
    names = {w.key: w.name for w in works}
    for key, outcome in outcomes.items():
        if outcome.status in ("rejected", "error"):
            print(f"warning: remote artifact for {names[key]} {outcome.status}: {outcome.detail}; "
                  f"compiling it locally", flush=True)
    print(f"remote {remote.config}: {_counts(outcomes)}", flush=True)
    return outcomes


def accept_replay(outcome: Transfer, record: ShapeRecord) -> bool:
    """Whether a pulled shape's replay makes it warm; notes on the outcome what happened."""
    if not record.ok:
        outcome.status, outcome.detail = "rejected", f"replay of the pulled entries failed: {record.error}"
        print(f"warning: {outcome.detail}; compiling locally", flush=True)
        return False
    if record.new:
        outcome.status = "incomplete"
        outcome.detail = f"the replay compiled {len(record.new)} kernels the artifact lacked"
    return True


def discard_pulled(root: Path, outcomes: list[Transfer]) -> None:
    """Take out the entries failed pulls brought in, so the local compile rebuilds them."""
    for name in sorted({n for outcome in outcomes for n in outcome.published}):
        entries.remove(root, name)


def push(remote: Remote, items, cache: CacheRoot, fp: dict, scratch: Path) -> dict[str, Transfer]:
    """Upload (work, entry names) items, each with its replay proof where the record has
    one; note each outcome in the shape's record."""
    if not items:
        return {}
    root = cache.path
    proven = [(work, names, proof_of(records.read_shape(root, work.key)[0], work)) for work, names in items]
    outcomes = remote.push_many(proven, cache, fp, scratch)
    for work, _ in items:
        outcome = outcomes[work.key]
        if outcome.status == "error":
            print(f"warning: could not push {work.name}: {outcome.detail}", flush=True)
        record, _ = records.read_shape(root, work.key)
        if record is not None:
            record.remote = RemoteNote(pull=record.remote.pull if record.remote else None, push=outcome.as_record())
            records.write_json(records.shape_path(root, work.key), record)
    print(f"remote {remote.config}: {_counts(outcomes)}", flush=True)
    return outcomes


def proof_of(record: ShapeRecord | None, work) -> dict | None:
    """The replay proof a manifest carries: this shape's full sweep, run against exactly
    these entries, compiled nothing. None unless the record shows that."""
    if (record is None or not record.ok or record.new or record.replay is None or record.replay.new_entries
            or record.replay.calls != len(work.m_values)):
        return None
    return {"entries": sorted(record.entries), "m_count": len(work.m_values), "calls": record.replay.calls,
            "new_entries": 0, "verification": record.verification, "proved_at": record.finished_at}


def proven_pull(outcome: Transfer, work) -> bool:
    """Whether a pulled artifact holds by its manifest alone: every file matched its sha256
    (the pull checked), and the pusher's proof covers exactly these entries and this M list
    (the artifact key already pins the shape, its M list and the toolchain)."""
    proof = outcome.proof
    return (outcome.status == "hit" and isinstance(proof, dict) and proof.get("new_entries") == 0
            and proof.get("calls") == proof.get("m_count") == len(work.m_values)
            and proof.get("entries") == outcome.names)


def warm_shapes(cache: CacheRoot, works, fp: dict) -> list[tuple]:
    """(work, entry names) for each work that is warm here: what `doit push` uploads."""
    found = []
    for work in works:
        if not records.shape_reasons(cache, work.key, fp):
            record, _ = records.read_shape(cache.path, work.key)
            found.append((work, sorted(record.entries)))
    return found


def _counts(outcomes: dict[str, Transfer]) -> str:
    counts = Counter(o.status for o in outcomes.values())
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
