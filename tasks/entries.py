"""DeepGEMM cache entries: `<root>/cache/kernel.<name>.<hash>/` with kernel.cu and a binary.

An entry is complete when its source exists and its binary is non-empty; a marker also
records the binary's size so a truncated or swapped file reads as stale.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

PREFIX = "kernel."
SOURCE = "kernel.cu"
BINARIES = ("kernel.cubin", "kernel.so")


def cache_dir(root: Path) -> Path:
    return Path(root) / "cache"


def describe(entry: Path) -> dict | None:
    """{"binary": file, "size": bytes} for a complete entry, None otherwise."""
    base = os.fspath(entry)
    try:
        os.stat(os.path.join(base, SOURCE))
    except OSError:
        return None
    for binary in BINARIES:
        try:
            size = os.stat(os.path.join(base, binary)).st_size
        except OSError:
            continue
        if size > 0:
            return {"binary": binary, "size": size}
    return None


def names(root: Path) -> set[str]:
    """Entry names in the cache now, complete or not: the difference across a run is what it built."""
    try:
        return {e.name for e in os.scandir(cache_dir(root)) if e.name.startswith(PREFIX)}
    except FileNotFoundError:
        return set()


def complete_entries(root: Path) -> dict[str, dict]:
    found = {}
    try:
        children = list(os.scandir(cache_dir(root)))
    except FileNotFoundError:
        return found
    for child in children:
        if child.name.startswith(PREFIX) and child.is_dir(follow_symlinks=False):
            desc = describe(Path(child.path))
            if desc:
                found[child.name] = desc
    return found


def problem(root: Path, name: str, recorded: dict) -> str | None:
    """Why a recorded entry no longer holds, or None if it is intact."""
    entry = os.path.join(root, "cache", name)
    now = describe(entry)
    if now is None:
        return f"entry {name} {'incomplete' if os.path.isdir(entry) else 'missing'}"
    if now != recorded:
        return (f"entry {name} changed ({recorded.get('binary')} {recorded.get('size')} bytes"
                f" -> {now['binary']} {now['size']} bytes)")
    return None


def remove(root: Path, name: str) -> None:
    """Take an entry out of the cache: renamed aside first, so no reader sees it half deleted."""
    aside = Path(root) / "tmp" / f"removed-{os.urandom(16).hex()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(cache_dir(root) / name, aside)
    shutil.rmtree(aside, ignore_errors=True)


def publish(src: Path, root: Path) -> bool:
    """Move a complete entry into the cache by atomic rename; never replace a complete one.

    Returns True if `src` became the published entry.
    """
    dest = cache_dir(root) / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if describe(dest) is not None:
        return False
    if dest.exists():
        remove(root, src.name)  # a broken leftover (e.g. an interrupted 0.1.x build)
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False  # another publisher won the race; theirs is as good
        raise
    return True
