"""The typed shape of what jitwarm keeps in a cache root: entries, shape records, markers.

Records are read with these types, so a file with valid JSON but a wrong field type reads
as unreadable (the target is stale and re-warms), never as a crash. The JSON is the same
as the plain dicts earlier versions wrote; fields added later have defaults.
"""

from __future__ import annotations

import msgspec

SCHEMA = 1


class Entry(msgspec.Struct, frozen=True, omit_defaults=True):
    """A complete cache entry as a marker records it."""

    binary: str  # kernel.cubin (or kernel.so in old 0.1.x releases)
    size: int  # bytes: a truncated or swapped binary reads as changed
    root: str | None = None  # the cache root holding it (the writable one, or a read-only one)
    sha256: str | None = None  # the binary's digest: a same-size corruption reads as changed
    mtime_ns: int | None = None  # the binary's mtime: `doit stale` re-hashes only when it moved


class ShapeDesc(msgspec.Struct, kw_only=True):
    """One GEMM shape over one M list (tasks/plan/targets.ShapeWork.describe)."""

    key: str
    kind: str
    n: int
    k: int
    groups: int
    m_count: int
    m_min: int | None = None
    m_max: int | None = None


class ReplayStats(msgspec.Struct):
    new_entries: int  # must be 0 for a warm to hold
    calls: int
    seconds: float


class PoolNote(msgspec.Struct, kw_only=True):
    """What the compile pool of a shape's batch did."""

    workers: int
    compiled: int
    deferred: int
    complete: bool  # every compile call of the shape finished
    timings: dict = {}
    kernel_seconds: dict = {}


class RemoteStep(msgspec.Struct, kw_only=True):
    """What the remote cache did for a shape: pulling (hit, miss, rejected, error, incomplete)
    or pushing (pushed, exists, error)."""

    status: str
    detail: str = ""
    entries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    published: list[str] = []  # entries a pull added to the local cache


class RemoteNote(msgspec.Struct, omit_defaults=True):
    pull: RemoteStep | None = None
    push: RemoteStep | None = None


class Replayed(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a shape's replay reports: the entries its sweep used, and what it had to compile."""

    entries: dict[str, Entry]
    new: list[str]
    calls: int
    sweep_seconds: float
    verification: str  # how the entries were attributed
    launches: str  # captured in CUDA graphs, or run
    pieces: int | None = None  # pulled shapes: replayed in pieces by shared processes
    processes: int | None = None


class ShapeRecord(msgspec.Struct, kw_only=True):
    """`<root>/jitwarm/shapes/<key>.json`: a shape's last warm, shared by every target that needs it."""

    schema: int
    key: str
    shape: ShapeDesc
    fingerprint: dict[str, str | None]
    ok: bool
    entries: dict[str, Entry] = {}  # a replay's (Replayed) fields, when it ran
    new: list[str] = []
    calls: int | None = None
    sweep_seconds: float | None = None
    verification: str | None = None
    launches: str | None = None
    pieces: int | None = None
    processes: int | None = None
    error: str | None = None
    log_tail: list[str] = []
    finished_at: str | None = None
    log: str | None = None
    seconds: float | None = None  # the shape's batch so far, when its replay landed
    pool: PoolNote | None = None
    reduced_max_m: int | None = None  # sglang's memory rule cut the M list
    m_count: int | None = None
    replay: ReplayStats | None = None
    remote: RemoteNote | None = None
    baked: bool = False  # built from known sources on a host without a GPU (tasks/runner/bake.py): not proven


class MarkerShape(ShapeDesc, kw_only=True):
    entries: list[str]
    new: list[str] = []
    seconds: float | None = None
    verification: str | None = None
    replay: ReplayStats | None = None
    reduced_max_m: int | None = None


class Marker(msgspec.Struct, kw_only=True):
    """`<root>/jitwarm/markers/<target>.json`: the proof a target is warm; the only truth `doit list` reads."""

    schema: int
    target: str
    model: str
    hf_id: str | None
    tp: int | None
    launch_index: int | None
    launch_args: list[str]
    launch_hash: str
    plan_hash: str | None  # None for a fallback target: only the server knew its shapes
    m_list: str | None
    fingerprint: dict[str, str | None]
    cache_root: str
    entries: dict[str, Entry]
    verified: str
    warmed_at: str
    path: str = "planned"
    shapes: list[MarkerShape] = []
    seconds: dict[str, float] = {}
    lock: str | None = None  # fallback: the lock file the server's shapes went to
    captured_shapes: list[str] = []
    new: list[str] = []
    verification: str | None = None


class FallbackFailure(msgspec.Struct, kw_only=True):
    """`<root>/jitwarm/fallback/<target>.json`: why the fallback's last run failed."""

    launch_hash: str
    error: str
    at: str
