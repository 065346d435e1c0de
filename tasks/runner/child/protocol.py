"""What the pool's parent and its forked children agree on: the plan and the messages
(typed, msgspec), exit codes, the one-line environment problem, how replays record their
calls, and where shared-replay pieces report. Imported by both sides."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tasks.state.cacheroot import CachePlan

EXIT_ENV = 3  # a child's exit code for an environment problem, reported as one line
COMPILE_DONE = "compile.done"  # written beside the timings once every compile worker has ended
PROBLEM_PREFIX = "jitwarm worker: "
CAPTURED = "captured, not run (first and last M run)"
CAPTURE_CHUNK = 256  # calls per graph: 0.70 s per 16384-call sweep vs 1.05 s at 64, same peak memory


def queue_failed(queue_dir: Path, key: str) -> Path:
    """What the kernel queue (tasks/runner/kernel_queue.py) leaves in its directory for a kernel it
    could not build: a worker waiting for that kernel then compiles it itself, and sees nvcc's error."""
    return queue_dir / f".failed-{key}"


class EnvironmentProblem(Exception):
    """No GPU, no deep_gemm, or a mismatch the planner must know about."""


def problem_line(log_tail: list[str]) -> str:
    """The one-line environment problem a child reported (EXIT_ENV), from its log tail."""
    line = next((ln for ln in reversed(log_tail) if ln.startswith(PROBLEM_PREFIX)), "")
    return line.removeprefix(PROBLEM_PREFIX)


def piece_path(spec: "SharedSpec", i: int) -> Path:
    """Where shared-replay piece `i` writes its result (a PieceResult)."""
    return Path(spec.dir) / f"piece-{i}.json"


def status_path(spec: "SharedSpec", i: int) -> Path:
    """Where the zygote notes how a shared-replay piece's process ended (a PieceStatus), if it died on it."""
    return Path(spec.dir) / f"piece-{i}.status"


# --- the pool plan (parent -> zygote -> children) ------------------------------------------
class Shape(msgspec.Struct, frozen=True):
    kind: str  # sglang's DeepGemmKernelType name
    n: int
    k: int
    groups: int


class CompilePlan(msgspec.Struct, kw_only=True):
    module: str  # the deep_gemm to import (or a test stand-in)
    shapes: list[Shape]
    rows: list[int]  # each shape's buffer rows (its largest M)
    busy_flag: str  # the shim writes a kernel's key there when another worker is building it
    first_call: tuple[int, int] | None  # (shape index, M) run before the queue, waiting if need be
    # Stub discovery (tasks/runner/stubs.py): the worker's scratch cache root and the file where it
    # keeps what it found there ({"entries": {name: kernel key}, "made": {shape: calls}}); "" = off.
    scratch: str = ""
    found: str = ""


class Job(msgspec.Struct, kw_only=True):
    log: str  # the child's stdout and stderr
    status: str  # how the child ended, noted by the zygote (the parent polls for it)
    result: str = ""  # what the child reports (a message below)
    env: dict[str, str] = {}  # set in the child before it runs


class CompileJob(Job, kw_only=True):
    plan: CompilePlan


class ReplayPlan(msgspec.Struct, kw_only=True):
    cache: CachePlan
    staging: str  # the private view of the cache this replay runs against
    module: str
    shape: Shape
    m_values: list[int]
    contig_alignment: int  # what the M list assumed: checked against the installed deep_gemm


class ReplayJob(Job, kw_only=True):
    plan: ReplayPlan
    ready: str = ""  # a file that appears once the pool has written the shape's entries ("" = no wait)


class SharedShape(msgspec.Struct):
    shape: Shape
    m_values: list[int]


class SharedSpec(msgspec.Struct, kw_only=True):
    """The pulled shapes' replay, cut into pieces that a few processes drain."""

    dir: str  # where pieces report
    cache: CachePlan
    module: str
    contig_alignment: int
    shapes: list[SharedShape]
    pieces: list[tuple[int, int, int]]  # (shape index, first call, count)
    processes: int
    pool_log: str
    # Per shape: a file that appears once its entries are in (known sources, tasks/runner/known.py),
    # or "" when they already are (pulled shapes). Empty: all are.
    ready: list[str] = []


class PoolPlan(msgspec.Struct, kw_only=True):
    module: str
    cache: CachePlan
    compile: list[CompileJob]
    queue: list[tuple[int, int]]  # every (shape index, M) call, in the order workers take them
    chunk: int
    tail_start: int  # from here on workers take tail_chunk calls at a time
    tail_chunk: int
    # With stub discovery, a take runs to the next of these queue offsets (one shape's calls), so one
    # worker makes all of a shape's calls; [] = chunk and tail_chunk decide.
    bounds: list[int] = []
    replays: list[ReplayJob]  # replays[i] proves compile shape i; it starts once all that shape's calls are made
    shared: SharedSpec | None
    timeout_s: float
    parallel_replay: int
    timings: str  # where the zygote writes its phases' seconds
    # (GPU id, children its memory holds): each child runs on one, the least loaded; [] = CUDA's default
    devices: list[tuple[str, int]] = []


# --- what children report (-> parent) ------------------------------------------------------
class CompileResult(msgspec.Struct, kw_only=True):
    done: dict[str, int]  # shape index -> calls made
    deferred: int  # calls put off while another worker built their kernel
    captured: int = 0  # calls recorded in a never-launched CUDA graph instead of run
    eager: list[int] = []  # shape indices whose graph capture kept failing: their calls ran
    capture_errors: dict[str, str] = {}  # shape index -> why its first capture failed
    ran_after_failure: int = 0  # calls run eagerly because their capture failed
    import_s: float
    seconds: float


class PieceResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One shared-replay piece: what its calls opened and created, or why it failed."""

    log: str
    opened: list[str] = []
    created: list[str] = []
    calls: int = 0
    launches: str = ""
    seconds: float = 0.0
    sees_opens: bool = True
    error: str | None = None
    skipped: bool = False  # another piece of its shape failed first


class PieceStatus(msgspec.Struct):
    """How the process replaying a piece ended, when it died on it."""

    how: str
    log: str


class SharedProcessJob(Job, kw_only=True):
    staging: str  # its private view of the cache


def shared_process(spec: SharedSpec, n: int, log: str) -> SharedProcessJob:
    """The job of the n-th shared replay process (its pieces report through the spec)."""
    return SharedProcessJob(log=log, status="", staging=str(Path(spec.dir) / f"view-{n}"))
