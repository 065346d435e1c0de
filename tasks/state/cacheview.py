"""A private, hard-linked view of a cache (all its roots), watched with inotify.

A warm (one shape's worker, or a whole fallback server run) points DeepGEMM at the view.
The view holds every complete entry the loader would find in any root, so read-only
roots count as they will for the server. inotify on the view's own directories tells
exactly which entries that run loaded or created, even while other runs read the same
real entries through their own views. New entries are published into the writable root
by atomic rename, DeepGEMM's own protocol.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tasks.state import entries
from tasks.state.cacheroot import CacheRoot


class CacheView:
    def __init__(self, cache: CacheRoot, path: Path):
        self.cache, self.path = cache, Path(path)
        self.staged = _stage(cache, self.path)
        self.watcher = _EntryWatcher(entries.cache_dir(self.path), self.staged, cache.layout)
        self._created: set[str] = set()  # what checkpoint() has already reported

    def drain(self) -> None:
        """Read pending events; call now and then so the kernel queue cannot overflow."""
        self.watcher.drain()

    def refresh(self) -> None:
        """Stage the complete entries the roots gained since (known sources land while replays
        run: tasks/runner/known.py); opens of them are seen from now on. Entries this view
        created stay as they are."""
        added = _stage(self.cache, self.path, self.staged | self._created)  # and skips what exists in the view
        self.staged |= added
        self.watcher.drain()
        self.watcher.created -= added  # linked in here, not built by the run
        self.watcher.watch(added)

    def commit(self) -> tuple[dict[str, dict], list[str], str]:
        """Publish what this run built; return (entries it used, as described in the real
        roots; names it created; how the attribution was made)."""
        used, how = self.watcher.used()
        created = sorted(name for name in used if name not in self.staged)
        for name in created:
            self._publish(name)
        described = {}
        for name in sorted(used):
            desc = entries.describe(self.cache, name)
            if desc is None:
                raise RuntimeError(f"entry {name} is incomplete after the run")
            described[name] = desc
        return described, created, how

    def checkpoint(self) -> tuple[set[str], set[str]]:
        """(entries opened, entries created) since the last checkpoint; the created ones
        are published into the real root at once. Created entries are found by listing
        the view, so they are known even without inotify; opened ones need inotify."""
        opened, _ = self.watcher.take()
        created = entries.names(self.path, self.cache.layout) - self.staged - self._created
        self._created |= created
        for name in created:
            self._publish(name)
        return opened - created, created

    def _publish(self, name: str) -> None:
        entry = entries.cache_dir(self.path) / name
        if self.cache.layout.describe(entry) is not None:
            entries.publish(entry, self.cache)

    @property
    def sees_opens(self) -> bool:
        return self.watcher.inotify is not None and not self.watcher.overflow


def salvage(path: Path, cache: CacheRoot) -> None:
    """Publish every complete entry left in a view (even after a crash), then remove it.

    Most of a view is what _stage linked in: a root already holds those, so one stat each
    tells them apart (checking each as a new entry cost a warm O(shapes x entries) lookups)."""
    found = entries.cache_dir(path)
    if found.is_dir():
        for entry in os.scandir(found):
            if not cache.layout.is_entry(entry.name) or _staged(entry.path, cache):
                continue
            if cache.layout.describe(entry.path) is not None:
                with contextlib.suppress(OSError):  # best effort; the next warm rebuilds it
                    entries.publish(Path(entry.path), cache)
    shutil.rmtree(path, ignore_errors=True)


def _staged(entry: str, cache: CacheRoot) -> bool:
    """Whether a view's entry is still a root's, as _stage linked it in: each of its files is
    the same inode as that root's (a file the root lost since makes it a candidate again)."""
    try:
        files = [(f.name, f.stat(follow_symlinks=False)) for f in os.scandir(entry) if f.is_file(follow_symlinks=False)]
    except OSError:
        return False
    name = os.path.basename(entry)
    for root in cache.roots:
        real = entries.cache_dir(root) / name
        try:
            if files and all(os.path.samestat(st, os.stat(real / file)) for file, st in files):
                return True
        except OSError:
            continue
    return False


def _stage(cache: CacheRoot, path: Path, skip: set[str] = frozenset()) -> set[str]:
    """Hard-link every complete entry the loader finds (but those in `skip`) into the view;
    return their names."""
    target = entries.cache_dir(path)
    target.mkdir(parents=True, exist_ok=True)
    names = set()
    for name, src in entries.complete(cache).items():
        dst = target / name
        if name in skip or os.path.lexists(dst):
            continue
        dst.mkdir()
        for child in os.scandir(src):
            if child.is_file(follow_symlinks=False):
                try:
                    os.link(child.path, dst / child.name)
                except OSError:  # another filesystem (a read-only root, say): copying keeps the view private
                    shutil.copy2(child.path, dst / child.name)
        names.add(name)
    return names


class _EntryWatcher:
    """Which staged entries get opened, and which new entries appear."""

    def __init__(self, cache: Path, staged: set[str], layout):
        self.cache, self.staged, self.layout = cache, staged, layout
        self.opened: set[str] = set()
        self.created: set[str] = set()
        self.overflow = False
        self.wd_names: dict[int, str] = {}
        try:
            from inotify_simple import INotify, flags
        except ImportError:
            self.inotify = None
            return
        self.flags = flags
        self.inotify = INotify()
        try:
            self.cache_wd = self.inotify.add_watch(cache, flags.CREATE | flags.MOVED_TO | flags.ONLYDIR)
        except OSError as exc:
            self._give_up(exc)
            return
        self.watch(staged)

    def watch(self, names: set[str]) -> None:
        """Watch these staged entries for opens."""
        if self.inotify is None:
            return
        try:
            for name in names:
                self.wd_names[self.inotify.add_watch(self.cache / name, self.flags.OPEN)] = name
        except OSError as exc:  # e.g. ENOSPC: fs.inotify.max_user_watches is smaller than the cache
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        print(f"  inotify unavailable ({exc}); attributing every entry", flush=True)
        self.inotify.close()
        self.inotify = None

    def drain(self) -> None:
        if self.inotify is None:
            return
        for event in self.inotify.read(timeout=0):
            if event.mask & self.flags.Q_OVERFLOW:
                self.overflow = True
            elif event.wd == self.cache_wd and self.layout.is_entry(event.name):
                self.created.add(event.name)
            elif event.wd in self.wd_names and event.name:
                self.opened.add(self.wd_names[event.wd])

    def take(self) -> tuple[set[str], set[str]]:
        """What was opened and created since the last take()."""
        self.drain()
        taken = (self.opened, self.created)
        self.opened, self.created = set(), set()
        return taken

    def used(self) -> tuple[set[str], str]:
        self.drain()
        if self.inotify is None or self.overflow:
            # Cannot tell what was read: attribute everything, which errs towards stale.
            everything = self.staged | entries.names(self.cache.parent, self.layout)
            return everything, "all entries attributed (inotify unavailable)"
        return self.opened | self.created, "inotify: entries opened or created by this run"
