"""DeepGEMM cache entries across a cache's roots, in whichever layout it uses (tasks/state/layouts.py).

A name is looked up as the loader does: in each root in order, the first where the entry
is present (0.2.x: `.committed` exists) is the one it takes, complete or not. A marker
records each entry's binary, its size, digest and mtime and the root holding it, so a
truncated, swapped or corrupted file reads as stale: a warm compares every digest
(session.verify_digests), `doit stale` only those whose mtime moved. New entries are only
ever published into the writable root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

from tasks import session as run_state
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
    """The entry the loader takes for `name` (binary, size, root, digest, mtime), if it is complete."""
    entry = locate(cache, name)
    desc = cache.layout.describe(entry) if entry is not None else None
    if not desc:
        return None
    binary = entry / desc["binary"]
    try:
        stat = os.stat(binary)
    except OSError:
        return None
    return Entry(desc["binary"], desc["size"], str(entry.parent.parent), _digest(binary, stat), stat.st_mtime_ns)


_digests: dict[tuple, str | None] = {}  # (path, inode, size, mtime) -> sha256: each file hashed once a process


def _digest(path: Path, stat: os.stat_result, fresh: bool = False) -> str | None:
    """`fresh`: hash the bytes even if this process hashed the same (path, inode, size, mtime): a
    same-size rewrite that keeps the mtime looks unchanged to the key."""
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if fresh or key not in _digests:
        try:
            with open(path, "rb") as fh:
                _digests[key] = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            _digests[key] = None
    return _digests[key]


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
    binary = entry / recorded.binary
    try:
        stat = os.stat(binary)
        with open(binary, "rb"):
            pass
    except OSError as exc:
        return f"entry {name} unreadable ({recorded.binary}: {exc.strerror or exc})"
    if recorded.sha256 and (run_state.verify_digests or stat.st_mtime_ns != recorded.mtime_ns):
        if _digest(binary, stat, fresh=run_state.verify_digests) != recorded.sha256:
            return f"entry {name} damaged ({recorded.binary} no longer matches the sha256 recorded at its warm)"
    return None


def remove_damaged(cache: CacheRoot, recorded: dict[str, Entry]) -> list[str]:
    """Take out of the writable root the recorded entries whose binary no longer matches its
    digest: the loader would load them as they are ("device kernel image is invalid")."""
    removed = []
    for name, entry in sorted(recorded.items()):
        if not entry.sha256:
            continue
        where = locate(cache, name)
        if where is None or where.parent.parent != Path(cache.path):
            continue  # missing, or in a read-only root jitwarm must not touch
        binary = where / entry.binary
        try:
            stat = os.stat(binary)
        except OSError:
            continue  # incomplete: remove_broken's
        if stat.st_size != entry.size or _digest(binary, stat, fresh=True) != entry.sha256:
            remove(cache.path, name)
            removed.append(f"removed damaged entry {name} ({entry.binary} no longer matches the sha256 recorded "
                           f"at its warm) from {cache.path}")
    return removed


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


def assemble(cache: CacheRoot, name: str, source: Path, cubin: Path, command: str) -> bool:
    """Publish entry `name` built from a kernel's source and its cubin (a known recipe's compile)
    into the writable root, unless the loader already finds a complete one. Written whole in
    the root's tmp/ first, then renamed in, as deep_gemm publishes its own builds."""
    return _built_then_published(cache, name, "known",
                                 lambda entry: cache.layout.assemble(entry, source, cubin, command))


def adopt(cache: CacheRoot, template: Path, cubin: Path, leave: tuple[str, ...] = ()) -> bool:
    """Publish the entry deep_gemm built in `template` (a stub discovery's scratch cache: its own
    files, named as it keys them) with `cubin` as its binary, leaving out the files in `leave`;
    unless the loader already finds a complete one. Written whole in tmp/, then renamed in."""
    def build(entry: Path) -> None:
        entry.mkdir(parents=True)
        for item in os.scandir(template):
            if item.name not in leave and item.name != "kernel.cubin" and item.is_file():
                shutil.copyfile(item.path, entry / item.name)
        shutil.copyfile(cubin, entry / "kernel.cubin")

    return _built_then_published(cache, template.name, "adopt", build)


def _built_then_published(cache: CacheRoot, name: str, why: str, build) -> bool:
    """`build(entry)` writes entry `name` whole in the writable root's tmp/ (jitwarm-*, swept after a
    kill), then it is renamed in, as deep_gemm publishes its own builds."""
    scratch = Path(cache.path) / "tmp" / f"jitwarm-{why}-{os.getpid()}-{os.urandom(8).hex()}"
    try:
        build(scratch / name)
        return publish(scratch / name, cache)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
