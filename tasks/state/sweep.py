"""Housekeeping of a cache root at the start of a warm: what killed runs left behind.

Build directories under `<root>/tmp/` (0.1.x `<pid>-<uuid>`, 0.2.x `<uuid>`, jitwarm's own
`jitwarm-*` and `removed-*`) are removed by their owner when a run ends normally; a kill leaves
them, and on a GPU they hold real cubins. A directory is swept only when nothing can still own
it: it was last changed before this run started, and no live process has its working directory
or an open file under it, or (started before the directory last changed) names this root in its
environment, as a builder does (DG_JIT_CACHE_DIR, SGLANG_DG_CACHE_DIR, JITWARM_KSTORE, ...).
Anything untouched for longer than `stale_s` is swept regardless: no single build lives that long.

The shim's stores (`<root>/jitwarm/kstore/<toolchain digest>/`) only need to outlive concurrent
runs: other toolchains' stores untouched for `stale_s` go, with their lock files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import psutil


def leftovers(root: Path, started: float, stale_s: float) -> list[Path]:
    """Entries of `<root>/tmp` no live process can own (see the module docstring)."""
    tmp = Path(root) / "tmp"
    try:
        candidates = [Path(e.path) for e in os.scandir(tmp)]
    except OSError:
        return []
    now = time.time()
    aged = {}
    for path in candidates:
        newest = _newest_mtime(path)
        if newest is not None and newest < started:
            aged[path] = newest
    if not aged:
        return []
    owners = _live_users(Path(root), [p for p, t in aged.items() if now - t < stale_s])
    return [path for path, newest in aged.items()
            if now - newest >= stale_s or not any(_owns(owner, path, newest) for owner in owners)]


def sweep_tmp(root: Path, started: float, stale_s: float) -> int:
    """Remove what leftovers() finds; returns how many went."""
    gone = 0
    for path in leftovers(root, started, stale_s):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        gone += not os.path.lexists(path)
    return gone


def sweep_stores(kstore: Path, keep: Path, stale_s: float) -> int:
    """Remove the shim stores other than `keep` that nothing touched for `stale_s`; returns how many."""
    gone = 0
    try:
        stores = [Path(e.path) for e in os.scandir(kstore) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    cutoff = time.time() - stale_s
    for store in stores:
        if store == keep:
            continue
        newest = _newest_mtime(store)
        if newest is None or newest < cutoff:
            shutil.rmtree(store, ignore_errors=True)
            gone += not store.exists()
    return gone


class _User:
    """A live process that may be building under the root."""

    def __init__(self, created: float, paths: list[str], names_root: bool):
        self.created, self.paths, self.names_root = created, paths, names_root


def _owns(user: _User, path: Path, newest: float) -> bool:
    text = str(path)
    if any(p == text or p.startswith(text + os.sep) for p in user.paths):
        return True
    return user.names_root and user.created <= newest


def _live_users(root: Path, recent: list[Path]) -> list[_User]:
    """Other processes' working directories and open files under `root`, and whether their environment names it."""
    if not recent:
        return []
    rooted = str(root.resolve())
    users = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "create_time"]):
        if proc.info["pid"] == me:
            continue
        paths: list[str] = []
        names_root = False
        with contextlib.suppress(psutil.Error, OSError):
            cwd = proc.cwd()
            if cwd.startswith(rooted):
                paths.append(cwd)
        with contextlib.suppress(psutil.Error, OSError):
            paths += [f.path for f in proc.open_files() if f.path.startswith(rooted)]
        with contextlib.suppress(psutil.Error, OSError):  # denied: another user's, which cannot write here
            names_root = any(rooted in value or str(root) in value for value in proc.environ().values())
        if paths or names_root:
            users.append(_User(proc.info["create_time"] or 0.0, [_resolved(p, root, rooted) for p in paths], names_root))
    return users


def _resolved(path: str, root: Path, rooted: str) -> str:
    """A path under the resolved root, spelt under `root` as the candidates are."""
    return str(root) + path[len(rooted):] if path.startswith(rooted) else path


def _newest_mtime(path: Path) -> float | None:
    """The latest modification under `path` (itself included), or None if it vanished."""
    try:
        newest = os.lstat(path).st_mtime
    except OSError:
        return None
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest
