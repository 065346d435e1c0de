"""Run a command and see which DeepGEMM cache entries appear while it runs (`doit watch`).

Every root is watched, writable and read-only: one inotify watch on each `<root>/cache/`
(or, until it exists, on its nearest existing parent), so a root of any size costs one
listdir at the start and at the end. What appeared is the entries complete at the end whose
names were not there at the start, plus any seen appearing and gone again.

The command's process tree is left alone: it runs in our process group, so a terminal's
Ctrl-C reaches it directly; a SIGINT or SIGTERM sent to this process alone is passed on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import psutil

from tasks.state import layouts

_MASK_DIR = 0x00000100 | 0x00000080  # IN_CREATE | IN_MOVED_TO
_IN_ISDIR = 0x40000000
_IN_Q_OVERFLOW = 0x00004000


class Appeared(msgspec.Struct, frozen=True):
    name: str  # the entry's directory name, as its layout names it
    root: str
    seconds: float | None  # after the command started, when inotify saw it; None if found at the end only
    gone: bool = False  # seen appearing, but not there (or not complete) when the command ended


class Outcome(msgspec.Struct, frozen=True):
    returncode: int  # the command's; 128 + N when signal N ended it
    appeared: list[Appeared]
    seconds: float
    watch_problem: str | None = None  # why live watching was off (the end-of-run listing still counts)


def run(argv: list[str], env: dict, roots, layout: layouts.CacheLayout, on_entry=None) -> Outcome:
    """Run `argv` (never through a shell) while watching `roots`; `on_entry(Appeared)` is
    called from the watching thread as each entry appears."""
    watcher = _Watcher([Path(r) for r in dict.fromkeys(map(str, roots))], layout, on_entry)
    before = {root: _names(root, layout) for root in watcher.roots}
    started = time.monotonic()
    watcher.start(started, before)
    try:
        returncode = _run_passing_signals(argv, env)
    except OSError as exc:
        watcher.stop()
        # As shells say it: 127 when there is no such command, 126 when it cannot be executed.
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        raise WatchError(f"cannot run {argv[0]!r}: {exc.strerror or exc}", code) from None
    seconds = time.monotonic() - started
    seen = watcher.stop()
    appeared: dict[tuple[str, str], Appeared] = {}
    for root in watcher.roots:
        for name in sorted(_complete(root, layout, _names(root, layout) - before[root])):
            key = (str(root), name)
            appeared[key] = Appeared(name, str(root), seen[key].seconds if key in seen else None)
    for key, item in seen.items():
        if key not in appeared and item.name not in before[Path(item.root)]:
            appeared[key] = msgspec.structs.replace(item, gone=True)
    ordered = sorted(appeared.values(), key=lambda a: (a.seconds is None, a.seconds or 0.0, a.root, a.name))
    return Outcome(returncode, ordered, round(seconds, 3), watcher.problem)


class WatchError(RuntimeError):
    """The command could not be started; one line, and the exit code a shell would give."""

    def __init__(self, message: str, code: int = 127):
        super().__init__(message)
        self.code = code


def _names(root: Path, layout) -> set[str]:
    """Entry names in the root, complete or not: one listdir, no stat per entry (a root
    may hold tens of thousands; only the few new ones are checked for completeness)."""
    try:
        names = os.listdir(root / "cache")
    except OSError:
        return set()
    return {name for name in names if layout.is_entry(name)}


def _complete(root: Path, layout, names) -> set[str]:
    return {name for name in names if layout.present(root / "cache" / name)}


_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _run_passing_signals(argv: list[str], env: dict) -> int:
    """Run the command to its end, and then until every process it started has ended too; the
    handlers are in place before it starts, so no signal sent meanwhile ends the watch and
    leaves the command running unwatched.

    This process becomes a child subreaper (Linux): what the command leaves running when it
    exits (`cmd &`, a daemonised server) is reparented here and waited for, since it may still
    compile kernels. The command gets a parent-death signal: a `kill -9` of the watch ends it."""
    started: list[subprocess.Popen] = []
    pending: list[int] = []  # signals that came before the command existed
    me = os.getpid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def forward(signum, frame):
        if signum == signal.SIGINT and _terminal_sent_it():
            return  # the terminal sent it to the whole foreground group, the command included
        if not started:
            pending.append(signum)
            return
        # To the command while it runs (it passes it on as it sees fit); then to what it left running.
        for proc in [started[0]] if started[0].poll() is None else _descendants():
            with contextlib.suppress(OSError, psutil.Error):  # it has just ended
                proc.send_signal(signum)

    def die_with_the_watch():
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != me:  # the watch died before the prctl took hold
            os._exit(128 + signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(argv, env=env, preexec_fn=die_with_the_watch)
        started.append(child)
        for signum in pending:
            child.send_signal(signum)
        code = _wait(child)
        left = _descendants()
        if left:
            print(f"jitwarm watch: the command exited and left {len(left)} process(es) running; waiting for "
                  "them, they may still compile kernels", file=sys.stderr, flush=True)
            _wait_for(left)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _wait(child: subprocess.Popen) -> int:
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:  # a handler raced the swap; keep waiting for the command
            continue


def _descendants() -> list:
    with contextlib.suppress(psutil.Error):
        return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    return []


def _wait_for(procs: list) -> None:
    """Wait until `procs` and whatever they start have ended, reaping each as it exits."""
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not _descendants():
            return
        time.sleep(0.1)


def _terminal_sent_it() -> bool:
    """Whether our process group is a terminal's foreground group (a Ctrl-C reached the command too)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


class _Watcher:
    """inotify on each root's cache/ dir (or its nearest existing parent until it exists)."""

    def __init__(self, roots: list[Path], layout, on_entry):
        self.roots, self.layout, self.on_entry = roots, layout, on_entry
        self.problem: str | None = None
        self.seen: dict[tuple[str, str], Appeared] = {}
        self._watches: dict[int, list[tuple[Path, Path]]] = {}  # wd -> [(the dir watched, a root it serves)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = None

    def start(self, started: float, before: dict[Path, set[str]]) -> None:
        self.started, self.before = started, before
        try:
            from inotify_simple import INotify
            self._fd = INotify()
            for root in self.roots:
                self._arm(root, rescan=False)  # `before` was listed just now
        except (ImportError, OSError) as exc:
            self.problem = f"live watching is off ({exc.__class__.__name__}: {exc}); entries are counted at the end"
            self._close()
            return
        self._thread = threading.Thread(target=self._loop, name="jitwarm-watch", daemon=True)
        self._thread.start()

    def stop(self) -> dict[tuple[str, str], Appeared]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            self._drain(0)  # what the command did just before it ended
        self._close()
        return self.seen

    def _close(self) -> None:
        if self._fd is not None:
            self._fd.close()
            self._fd = None

    def _arm(self, root: Path, rescan: bool = True) -> None:
        """Watch root/cache, or the nearest existing parent of it until it appears; `rescan`
        finds what a cache/ that just appeared already holds."""
        cache = root / "cache"
        path = cache
        while not path.is_dir() and path.parent != path:
            path = path.parent
        wd = self._fd.add_watch(str(path), _MASK_DIR)  # a dir watched twice gives the same wd
        if (path, root) not in self._watches.setdefault(wd, []):
            self._watches[wd].append((path, root))
        if path == cache and rescan:
            self._scan(root)

    def _scan(self, root: Path) -> None:
        for name in _complete(root, self.layout, _names(root, self.layout) - self.before[root]):
            self._saw(root, name)

    def _saw(self, root: Path, name: str) -> None:
        key = (str(root), name)
        if key in self.seen or name in self.before[root]:
            return
        item = Appeared(name, str(root), round(time.monotonic() - self.started, 3))
        self.seen[key] = item
        if self.on_entry is not None:
            with contextlib.suppress(Exception):  # a display problem must not stop the watch
                self.on_entry(item)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(200)

    def _drain(self, timeout_ms: int) -> None:
        try:
            events = self._fd.read(timeout=timeout_ms)
        except OSError:
            return
        for event in events:
            if event.mask & _IN_Q_OVERFLOW:
                for root in self.roots:
                    self._scan(root)
                continue
            if not event.mask & _IN_ISDIR:
                continue
            for path, root in list(self._watches.get(event.wd, ())):
                cache = root / "cache"
                if path == cache:
                    if self.layout.is_entry(event.name):
                        self._saw(root, event.name)
                elif path / event.name in (cache, *cache.parents):
                    # A parent on the way to cache/ appeared: watch further down (the old
                    # watch stays, another root may share it; its other events are ignored).
                    self._watches[event.wd].remove((path, root))
                    with contextlib.suppress(OSError):  # gone again: the end-of-run listing still counts
                        self._arm(root)
