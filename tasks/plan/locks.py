"""Shape locks: `models/<model>.lock.toml`, the GEMM shapes a real server reported.

A fallback warm runs `sglang.compile_deep_gemm`, which logs one line per GEMM shape it
compiles (`Try DeepGEMM JIT Compiling for <TYPE> N=.., K=.., num_groups=..`). Those lines
become a `[[capture]]` per launch tuple, so the next cold warm of the tuple needs no server
and no weight load. `doit watch --record` adds a `[[watched]]` per launch tuple: shapes a
watched run compiled that its target did not warm; the planner adds them to its plan.
Locks are meant to be committed next to the model file.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec


CAPTURE_LINE = re.compile(r"Try DeepGEMM JIT Compiling for <?([A-Z0-9_]+)>? N=(\d+), K=(\d+), num_groups=(\d+)")
_SHAPE_TEXT = re.compile(r"([A-Z0-9_]+) N=(\d+) K=(\d+) num_groups=(\d+)")
_HEADER = (
    "# GEMM shapes that `python -m sglang.compile_deep_gemm` reported for these launch tuples\n"
    "# ([[capture]]), and shapes `doit watch --record` saw a watched run compile ([[watched]]).\n"
    "# Delete a [[capture]] to capture that tuple again; delete a [[watched]] to stop warming its shapes.\n\n"
)

Shape = tuple[str, int, int, int]  # (kernel type, N, K, num_groups)


class Capture(msgspec.Struct, frozen=True):
    launch: int
    launch_hash: str
    tp: int
    args: tuple[str, ...]
    captured_at: str
    sglang: str | None
    deep_gemm: str | None
    shapes: tuple[Shape, ...]


class Watched(msgspec.Struct, frozen=True):
    """Shapes `doit watch --record` saw compiled for one launch tuple (merged over watches)."""

    launch: int
    launch_hash: str
    recorded_at: str
    command: str  # the last watched command, shell-quoted for display
    sglang: str | None
    deep_gemm: str | None
    shapes: tuple[Shape, ...]


class LockError(ValueError):
    """A lock file that cannot be used; the message is one line."""


def path_for(model_file: Path) -> Path:
    return Path(model_file).with_name(f"{Path(model_file).stem}.lock.toml")


def parse_log(lines) -> list[Shape]:
    """Distinct shapes in the order sglang first compiled them."""
    found: dict[Shape, None] = {}
    for line in lines:
        if match := CAPTURE_LINE.search(line):
            kind, n, k, groups = match.groups()
            found.setdefault((kind, int(n), int(k), int(groups)), None)
    return list(found)


def read(model_file: Path) -> dict[int, Capture]:
    """Captures by launch index; {} when there is no lock. Raises LockError."""
    return read_all(model_file)[0]


def read_all(model_file: Path) -> tuple[dict[int, Capture], dict[int, Watched]]:
    """Captures and watched shapes by launch index. Raises LockError."""
    path = path_for(model_file)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LockError(f"{path.name}: unreadable ({exc})") from None
    return _captures(path, raw), _watched(path, raw)


def _captures(path: Path, raw: dict) -> dict[int, Capture]:
    captures = {}
    for i, item in enumerate(raw.get("capture", [])):
        try:
            shapes = tuple(_shape(text) for text in item["shapes"])
            capture = Capture(int(item["launch"]), str(item["launch_hash"]), int(item["tp"]),
                              tuple(item["args"]), str(item["captured_at"]), item.get("sglang"),
                              item.get("deep_gemm"), shapes)
        except (KeyError, TypeError, ValueError) as exc:
            raise LockError(f"{path.name}: capture[{i}]: malformed ({exc.__class__.__name__}: {exc})") from None
        captures[capture.launch] = capture
    return captures


def _watched(path: Path, raw: dict) -> dict[int, Watched]:
    found = {}
    for i, item in enumerate(raw.get("watched", [])):
        try:
            watched = Watched(int(item["launch"]), str(item["launch_hash"]), str(item["recorded_at"]),
                              str(item.get("command", "")), item.get("sglang"), item.get("deep_gemm"),
                              tuple(_shape(text) for text in item["shapes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LockError(f"{path.name}: watched[{i}]: malformed ({exc.__class__.__name__}: {exc})") from None
        found[watched.launch] = watched
    return found


def with_capture(model_file: Path, capture: Capture) -> bytes:
    """The lock file's new text: this launch tuple's capture added or replaced (the caller
    writes it, atomically). Watched shapes are kept."""
    try:
        captures, watched = read_all(model_file)
    except LockError:
        captures, watched = {}, {}  # a broken lock is rewritten from what the server just reported
    captures[capture.launch] = capture
    return _dump(captures, watched)


def with_watched(model_file: Path, watched: Watched) -> bytes:
    """The lock file's new text with these shapes added to the launch tuple's watched ones
    (those recorded for other launch args are replaced). Raises LockError: a lock that
    cannot be read is not rewritten, since its captures would be lost."""
    captures, found = read_all(model_file)
    old = found.get(watched.launch)
    if old is not None and old.launch_hash == watched.launch_hash:
        watched = msgspec.structs.replace(watched, shapes=tuple(dict.fromkeys(old.shapes + watched.shapes)))
    found[watched.launch] = watched
    return _dump(captures, found)


def _dump(captures: dict[int, Capture], watched: dict[int, Watched]) -> bytes:
    import tomli_w  # only writing needs it; planning reads locks with tomllib

    doc = {}
    if captures:
        doc["capture"] = [_as_toml(c) for c in sorted(captures.values(), key=lambda c: c.launch)]
    if watched:
        doc["watched"] = [_watched_toml(w) for w in sorted(watched.values(), key=lambda w: w.launch)]
    return (_HEADER + tomli_w.dumps(doc)).encode()


def _watched_toml(w: Watched) -> dict:
    item = {"launch": w.launch, "launch_hash": w.launch_hash, "recorded_at": w.recorded_at, "command": w.command}
    item.update({k: v for k, v in (("sglang", w.sglang), ("deep_gemm", w.deep_gemm)) if v is not None})
    item["shapes"] = [shape_text(s) for s in w.shapes]
    return item


def _as_toml(c: Capture) -> dict:
    item = {"launch": c.launch, "launch_hash": c.launch_hash, "tp": c.tp, "args": list(c.args),
            "captured_at": c.captured_at}
    item.update({k: v for k, v in (("sglang", c.sglang), ("deep_gemm", c.deep_gemm)) if v is not None})
    item["shapes"] = [shape_text(s) for s in c.shapes]
    return item


def shape_text(shape: Shape) -> str:
    kind, n, k, groups = shape
    return f"{kind} N={n} K={k} num_groups={groups}"


def _shape(text: str) -> Shape:
    match = _SHAPE_TEXT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"shape {text!r} is not 'TYPE N=.. K=.. num_groups=..'")
    kind, n, k, groups = match.groups()
    return kind, int(n), int(k), int(groups)
