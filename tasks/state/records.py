"""Markers and shape records: JSON inside the cache root, the source of truth for staleness.

Layout under `<root>/jitwarm/`: markers/<target>.json, shapes/<key>.json, logs/, staging/.
Living inside the root means wiping the cache wipes the markers too. Records are typed
(tasks/state/schema.py): one that does not read as its type is unreadable, so stale.
"""

from __future__ import annotations

import contextlib
import errno
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import msgspec

from tasks import session
from tasks.host import fingerprint
from tasks.plan.text import one_line
from tasks.state import entries
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import SCHEMA, Entry, FallbackFailure, Marker, ShapeRecord

_MAX_ENTRY_REASONS = 5
T = TypeVar("T")


def now() -> str:
    """The time a record is written, in UTC to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def state_dir(root: Path) -> Path:
    return Path(root) / "jitwarm"


def marker_path(root: Path, target_name: str) -> Path:
    return state_dir(root) / "markers" / f"{target_name}.json"


def shape_path(root: Path, key: str) -> Path:
    return state_dir(root) / "shapes" / f"{key}.json"


def fallback_failure_path(root: Path, target_name: str) -> Path:
    return state_dir(root) / "fallback" / f"{target_name}.json"


def fallback_failure(root: Path, target_name: str, launch_hash: str) -> str | None:
    """Why the target's last fallback run failed (for these launch args), or None."""
    failure = read_message(fallback_failure_path(root, target_name), FallbackFailure)
    return f"last fallback failed: {failure.error}" if failure and failure.launch_hash == launch_hash else None


def log_path(root: Path, name: str) -> Path:
    return state_dir(root) / "logs" / f"{name}.log"


_TAIL_BYTES = 256 * 1024


def log_tail(path: Path, lines: int = 30) -> list[str]:
    """The last lines of a log, reading at most its last 256 KiB."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def write_json(path: Path, data) -> None:
    """A record, message or dict as JSON, by write-then-rename: readers see the old file or
    the new one, never half of one."""
    session.wrote()  # staleness answers computed before this write are void
    replace_file(path, msgspec.json.format(msgspec.json.encode(data, order="sorted"), indent=1) + b"\n")


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk must not also fill up with half-written files
        if isinstance(exc, OSError) and exc.filename == str(tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the file meant
        raise


def os_problem(exc: OSError) -> str:
    """One line for a failed file operation: the path, the errno's name and its text."""
    name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else "error"
    where = exc.filename if exc.filename is not None else "?"
    return f"cannot write {where}: {name} ({exc.strerror or exc})"


def read_record(path: Path, kind: type[T]) -> tuple[T | None, str | None]:
    """(record, None), or (None, why) when it is missing, unreadable or not a `kind`."""
    try:
        data = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, msgspec.DecodeError) as exc:
        return None, f"unreadable ({one_line(exc)})"
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None, f"unreadable (schema {data.get('schema') if isinstance(data, dict) else '?'}, expected {SCHEMA})"
    try:
        return msgspec.convert(data, kind), None
    except msgspec.ValidationError as exc:
        return None, f"invalid ({exc})"


def read_shape(root: Path, key: str) -> tuple[ShapeRecord | None, str | None]:
    return read_record(shape_path(root, key), ShapeRecord)


def read_marker(root: Path, name: str) -> tuple[Marker | None, str | None]:
    return read_record(marker_path(root, name), Marker)


def read_message(path: Path, kind: type[T]) -> T | None:
    """A message a child process wrote (tasks/runner/child/protocol.py), or None."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError):
        return None


def entry_reasons(cache: CacheRoot, recorded: dict[str, Entry], seen: dict | None = None) -> list[str]:
    """`seen`: problems already looked up, by (name, binary, size); a caller checking many
    records that share entries passes one, and drops it once anything may have changed."""
    problems = [p for name in sorted(recorded) if (p := _problem(cache, name, recorded[name], seen))]
    if len(problems) > _MAX_ENTRY_REASONS:
        extra = len(problems) - _MAX_ENTRY_REASONS
        problems = problems[:_MAX_ENTRY_REASONS] + [f"and {extra} more entries"]
    return problems


def _problem(cache: CacheRoot, name: str, recorded: Entry, seen: dict | None) -> str | None:
    if seen is None:
        return entries.problem(cache, name, recorded)
    key = (name, recorded.binary, recorded.size, recorded.sha256)
    if key not in seen:
        seen[key] = entries.problem(cache, name, recorded)
    return seen[key]


def shape_reasons(cache: CacheRoot, key: str, fp: dict, seen: dict | None = None) -> list[str]:
    """Why a shape's warm no longer holds; [] when it does."""
    record, why = read_shape(cache.path, key)
    if record is None:
        return ["never warmed" if why == "missing" else f"shape record {why}"]
    if not record.ok:
        return [f"last warm failed: {record.error or 'unknown error'}"]
    return fingerprint.diff(record.fingerprint, fp) or entry_reasons(cache, record.entries, seen)


def superseded(root: Path, name: str, model: str, launch_index: int | None) -> list[Path]:
    """Markers of earlier args of the same launch tuple (same model file and position)."""
    found = []
    for path in (state_dir(root) / "markers").glob(f"{model}@*.json"):
        if path.stem == name:
            continue
        data, _ = read_record(path, Marker)
        if data and data.model == model and data.launch_index == launch_index:
            found.append(path)
    return found


def target_reasons(cache: CacheRoot, name: str, launch_hash: str, plan_hash: str | None, fp: dict,
                   model: str = "", launch_index: int | None = None, seen: dict | None = None) -> list[str]:
    """Why a target is stale, cheapest checks first; [] when up to date.

    `plan_hash` is None for fallback targets, whose shapes only the server knows.
    """
    marker, why = read_marker(cache.path, name)
    if marker is None and why == "missing" and superseded(cache.path, name, model, launch_index):
        return [f"launch args changed (launch[{launch_index}] was warmed with other args)"]
    if marker is None:
        return ["not warmed yet (no marker)" if why == "missing" else f"marker {why}"]
    reasons = []
    if marker.launch_hash != launch_hash:
        reasons.append("launch args changed")
    elif plan_hash is not None and marker.plan_hash != plan_hash:
        reasons.append("shape plan changed")
    reasons += fingerprint.diff(marker.fingerprint, fp)
    return reasons or entry_reasons(cache, marker.entries, seen)
