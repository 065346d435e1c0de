"""What the pool's parent and its forked children agree on: exit codes, the one-line
environment problem, how replays record their calls, and where shared-replay pieces
report. Imported by both sides; imports nothing from jitwarm."""

from __future__ import annotations

from pathlib import Path

EXIT_ENV = 3  # a child's exit code for an environment problem, reported as one line
PROBLEM_PREFIX = "jitwarm worker: "
CAPTURED = "captured, not run (first and last M run)"
CAPTURE_CHUNK = 256  # calls per graph: 0.70 s per 16384-call sweep vs 1.05 s at 64, same peak memory


class EnvironmentProblem(Exception):
    """No GPU, no deep_gemm, or a mismatch the planner must know about."""


def problem_line(log_tail: list[str]) -> str:
    """The one-line environment problem a child reported (EXIT_ENV), from its log tail."""
    line = next((ln for ln in reversed(log_tail) if ln.startswith(PROBLEM_PREFIX)), "")
    return line.removeprefix(PROBLEM_PREFIX)


def piece_path(spec: dict, i: int) -> Path:
    """Where shared-replay piece `i` writes its result."""
    return Path(spec["dir"]) / f"piece-{i}.json"


def status_path(spec: dict, i: int) -> Path:
    """Where the zygote notes how a shared-replay piece's process ended, if it died on it."""
    return Path(spec["dir"]) / f"piece-{i}.status"
