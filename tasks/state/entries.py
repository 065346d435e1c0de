"""DeepGEMM cache entries across a cache's roots, in whichever layout it uses (tasks/state/layouts.py).

A name is looked up as the loader does: in each root in order, the first where the entry
is present (0.2.x: `.committed` exists) is the one it takes, complete or not. A marker
records each entry's binary, its size and the root holding it, so a truncated or swapped
file reads as stale. New entries are only ever published into the writable root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import Entry


def cache_dir(root: Path) -> Path:
    return Path(root) / "cache"


def names(root: Path, layout) -> set[str]:
    """Entry names in one root now, complete or not: the difference across a run is what it built."""
    try:
        return {e.name for e in os.scandir(cache_dir(root)) if layout.is_entry(e.name)}
    except FileNotFoundError:
        return set()


def locate(cache: CacheRoot, name: str) -> Path | None:
    """The directory the loader takes for `name`, or None if no root has it."""
    for root in cache.roots:
        entry = cache_dir(root) / name
        if cache.layout.present(entry):
            return entry
    return None


def describe(cache: CacheRoot, name: str) -> Entry | None:
    """The entry the loader takes for `name` (binary, size, root), if it is complete."""
    entry = locate(cache, name)
    desc = cache.layout.describe(entry) if entry is not None else None
    return Entry(desc["binary"], desc["size"], str(entry.parent.parent)) if desc else None


def complete(cache: CacheRoot) -> dict[str, Path]:
    """Every complete entry the loader would take, by name, across the roots."""
    found: dict[str, Path] = {}
    seen: set[str] = set()
    for root in cache.roots:
        try:
            children = list(os.scandir(cache_dir(root)))
        except OSError:  # missing or unreadable: the loader finds nothing there either
            continue
        for child in children:
            if child.name in seen or not cache.layout.is_entry(child.name) or not child.is_dir(follow_symlinks=False):
                continue
            if cache.layout.present(child.path):
                seen.add(child.name)
                if cache.layout.describe(child.path) is not None:
                    found[child.name] = Path(child.path)
    return found


def problem(cache: CacheRoot, name: str, recorded: Entry) -> str | None:
    """Why a recorded entry no longer holds, or None if it is intact."""
    entry = locate(cache, name) or cache_dir(cache.path) / name
    if not os.path.isdir(entry):
        return f"entry {name} missing"
    now = cache.layout.describe(entry)
    if now is None:
        return f"entry {name} incomplete ({cache.layout.flaw(entry)})"
    if (now["binary"], now["size"]) != (recorded.binary, recorded.size):
        return (f"entry {name} changed ({recorded.binary} {recorded.size} bytes"
                f" -> {now['binary']} {now['size']} bytes)")
    return None


def remove(root: Path, name: str) -> None:
    """Take an entry out of a root: renamed aside first, so no reader sees it half deleted."""
    aside = Path(root) / "tmp" / f"removed-{os.urandom(16).hex()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(cache_dir(root) / name, aside)
    shutil.rmtree(aside, ignore_errors=True)


def remove_broken(cache: CacheRoot) -> list[str]:
    """Take incomplete entries out of the writable root; return a line for each.

    Builds are published whole by rename in both layouts, so an incomplete entry in cache/
    is damage, never work in progress. Left there it poisons the loader: 0.2.x DeepJIT
    renames a rebuild onto it, fails, and loads the broken one. Read-only roots are left alone.
    """
    removed = []
    try:
        children = [c for c in os.scandir(cache_dir(cache.path)) if cache.layout.is_entry(c.name)]
    except FileNotFoundError:
        return removed
    for child in children:
        if child.is_dir(follow_symlinks=False) and cache.layout.describe(child.path) is None:
            flaw = cache.layout.flaw(child.path)
            remove(cache.path, child.name)
            removed.append(f"removed broken entry {child.name} ({flaw}) from {cache.path}")
    return removed


def publish(src: Path, cache: CacheRoot) -> bool:
    """Move a complete entry into the writable root by atomic rename, unless the loader
    already finds a complete one; a broken leftover in the writable root is replaced.

    Returns True if `src` became the published entry.
    """
    if describe(cache, src.name) is not None:
        return False
    dest = cache_dir(cache.path) / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        remove(cache.path, src.name)  # e.g. an interrupted 0.1.x build, or 0.2.x without .committed
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False  # another publisher won the race; theirs is as good
        raise
    return True
