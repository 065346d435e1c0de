"""Shape locks: `models/<model>.lock.toml`, the GEMM shapes a real server reported.

A fallback warm runs `sglang.compile_deep_gemm`, which logs one line per GEMM shape it
compiles (`Try DeepGEMM JIT Compiling for <TYPE> N=.., K=.., num_groups=..`). Those lines
become a lock per launch tuple, so the next cold warm of the tuple needs no server and
no weight load. Locks are meant to be committed next to the model file.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec


CAPTURE_LINE = re.compile(r"Try DeepGEMM JIT Compiling for <?([A-Z0-9_]+)>? N=(\d+), K=(\d+), num_groups=(\d+)")
_SHAPE_TEXT = re.compile(r"([A-Z0-9_]+) N=(\d+) K=(\d+) num_groups=(\d+)")
_HEADER = (
    "# GEMM shapes that `python -m sglang.compile_deep_gemm` reported for these launch tuples,\n"
    "# captured by jitwarm. Delete a [[capture]] to capture that tuple again.\n\n"
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
    path = path_for(model_file)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LockError(f"{path.name}: unreadable ({exc})") from None
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


def with_capture(model_file: Path, capture: Capture) -> bytes:
    """The lock file's new text: this launch tuple's capture added or replaced (the caller
    writes it, atomically)."""
    import tomli_w  # only writing needs it; planning reads locks with tomllib

    try:
        captures = read(model_file)
    except LockError:
        captures = {}  # a broken lock is rewritten from what the server just reported
    captures[capture.launch] = capture
    doc = {"capture": [_as_toml(c) for c in sorted(captures.values(), key=lambda c: c.launch)]}
    return (_HEADER + tomli_w.dumps(doc)).encode()


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
