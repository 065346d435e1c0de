"""The no-op `doit warm`, answered from what the last one saw.

A no-op warm reads the registry, package metadata, markers, shape records and cache
entries, finds every target up to date and prints a line for each: about 40 ms of
planning and checks on top of doit's own start, most of it compiling modules when there
is no bytecode. While a `doit warm` runs, this module notes every path it opens, lists
or stats (an audit hook; os.stat and os.lstat wrapped). If the run ends as a no-op, it
saves those paths' signatures (mode, inode, device, size, mtime, ctime; a listed
directory's mtime covers its names, other directories keep only their identity; /proc
and /sys files are kept by their text) and the lines it printed, in a stamp beside
doit's DB. The next `doit warm` with the same command line, environment,
interpreter and working directory re-stats those paths; when none changed, nothing the
answer depends on did, and it prints the same lines without importing the planner.

What it cannot see it does not trust. A run saves no stamp if it started a process or
opened a socket, changed any file but doit's DB or wrote to stderr; from then on it notes
nothing (noting a cold warm's every stat cost 15% of its CPU). A path that changed
in the last 2 s is kept with a checksum of its content as well: a write in the same
clock tick may leave its stat as it was. Only a plain `doit warm` (optionally
`-f FILE`) with plain progress output takes the short path; JITWARM_NOOP_STAMP=off
turns it off. Kept small (stdlib, and the progress display's rule): it is imported first.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import stat
import sys
import time

ENV = "JITWARM_NOOP_STAMP"
VERSION = 1
RACY_NS = 2_000_000_000  # a path changed this recently is checked by content as well
RACY_MAX_BYTES = 1 << 24
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# Audit events after which the run's answer cannot be replayed from file signatures.
_VETO_PREFIXES = ("subprocess.", "os.exec", "os.posix_spawn", "os.fork", "os.system", "os.spawn", "socket.",
                  "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.link", "os.symlink", "os.truncate",
                  "os.utime", "os.chmod", "os.chown", "shutil.")


def dep_file() -> str:
    """doit's DB, as DOIT_CONFIG names it (relative to the dodo's directory, doit's cwd)."""
    return os.environ.get("JITWARM_DOIT_DB", ".doit.db")


def usable_db() -> None:
    """doit's database, checked before doit opens it: one that is not SQLite (a damaged file, or the
    JSON one older jitwarm releases kept) is moved aside with one line, and doit starts a new one.
    jitwarm's markers are the truth; doit's DB only caches what they say."""
    path = dep_file()
    if os.path.isdir(path):
        raise SystemExit(f"jitwarm: JITWARM_DOIT_DB={path} is a directory; name the file doit's database is kept in")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return  # doit creates it
    except OSError as exc:
        raise SystemExit(f"jitwarm: doit's database {path} cannot be read ({exc.strerror}); "
                         "set JITWARM_DOIT_DB to a file this user can write") from None
    problem = None
    if head and head != b"SQLite format 3\0":
        problem = "not an SQLite database"
    elif head:
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("select name from sqlite_master").fetchall()
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
    if problem is not None:
        aside = f"{path}.unreadable"
        try:
            os.replace(path, aside)
        except OSError as exc:
            raise SystemExit(f"jitwarm: doit's database {path} is unreadable ({problem}) and could not be moved "
                             f"aside ({exc.strerror}); remove it") from None
        print(f"jitwarm: doit's database {path} was unreadable ({problem}); moved it to {aside} and started "
              "a new one (the markers in the cache root say what is warm)", flush=True)


def stamp_path() -> str:
    return os.path.abspath(dep_file() + ".noop")


def _is_plain_warm(argv: list[str]) -> bool:
    """`doit`, `doit warm`, each optionally with `-f FILE`: nothing that changes what runs."""
    rest = list(argv)
    if rest[:1] in (["-f"], ["--file"]) and len(rest) >= 2:
        rest = rest[2:]
    elif rest and rest[0].startswith("--file="):
        rest = rest[1:]
    return rest in ([], ["warm"])


def _key() -> tuple:
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k not in ("_", "OLDPWD")))
    return (VERSION, tuple(sys.argv[1:]), os.getcwd(), sys.executable, sys.version, env)


def _signature(path: str, follow: bool, listed: bool):
    """What must stay the same: a listed directory's names (its mtime), only the identity
    of one merely looked at (an ancestor of a resolved path changes its mtime whenever a
    sibling comes or goes), and everything of a file."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None  # absent (or unreadable): it must stay so
    if not listed and stat.S_ISDIR(st.st_mode):
        return (st.st_mode, st.st_ino, st.st_dev)
    if path.startswith(("/proc/", "/sys/")) and not os.path.isdir(path):
        try:
            with open(path, "rb") as f:
                return f.read(1 << 16)  # pseudo-files: their stat says nothing of their text
        except OSError:
            return None
    return (st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _content(path: str) -> int | None:
    """A checksum of a file's bytes or a directory's names: for paths that changed so
    recently that a later write in the same clock tick would leave their stat as it was."""
    import binascii

    try:
        if os.path.isdir(path):
            return binascii.crc32("\0".join(sorted(os.listdir(path))).encode())
        if os.path.getsize(path) > RACY_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            return binascii.crc32(f.read())
    except OSError:
        return None


def _unchanged(path: str, follow: bool, listed: bool, kept) -> bool:
    now = _signature(path, follow, listed)
    if isinstance(kept, tuple) and len(kept) == 7:  # racy when saved: its content too
        return now == kept[:6] and _content(path) == kept[6]
    return now == kept


# --- the short path -------------------------------------------------------------------------
def replay() -> dict | None:
    """The last no-op's stamp if this run is one like it and nothing it read has changed."""
    if os.environ.get(ENV) == "off" or not _is_plain_warm(sys.argv[1:]):
        return None
    from tasks.report import progress  # os and time only: the display's own rule

    if progress.live_wanted(sys.stdout):  # a terminal's live table is not replayed
        return None
    try:
        with open(stamp_path(), "rb") as f:
            stamp = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not _well_formed(stamp) or stamp["key"] != _key():
        return None  # damaged or another run's: the normal path answers (and writes a new one)
    try:
        for path, follow, listed, signature in stamp["paths"]:
            if not _unchanged(path, follow, listed, signature):
                return None
    except (OSError, TypeError, ValueError):
        return None
    return stamp


def _well_formed(stamp) -> bool:
    """A stamp of the shape save() writes; anything else (a damaged or hand-made file) is no stamp."""
    if not isinstance(stamp, dict) or not {"key", "paths", "lines", "summary", "targets"} <= stamp.keys():
        return False
    summary, paths, targets = stamp["summary"], stamp["paths"], stamp["targets"]
    return (isinstance(stamp["lines"], str) and isinstance(summary, tuple) and len(summary) == 2
            and all(isinstance(part, str) for part in summary)
            and isinstance(targets, list) and all(isinstance(name, str) for name in targets)
            and isinstance(paths, list)
            and all(isinstance(p, tuple) and len(p) == 4 and isinstance(p[0], str) and isinstance(p[1], bool)
                    and isinstance(p[2], bool) for p in paths))


def doit_config(stamp: dict) -> dict:
    return {"default_tasks": ["warm"], "reporter": _reporter(stamp), "continue": True,
            "dep_file": dep_file(), "backend": "sqlite3"}


def tasks(stamp: dict):
    yield {"basename": "warm", "name": None, "uptodate": [True], "doc": "every target is up to date"}
    for name in stamp["targets"]:
        yield {"name": name, "actions": None, "uptodate": [True]}


def _reporter(stamp: dict):
    from doit.reporter import ConsoleReporter

    class NoopReporter(ConsoleReporter):
        """Prints what the last no-op printed; its summary line's time is this run's."""

        def __init__(self, outstream, options):
            super().__init__(outstream, options)
            self.started = time.monotonic()

        def skip_uptodate(self, task):
            """Nothing per target: the kept lines are printed whole at the end."""

        def complete_run(self):
            super().complete_run()
            head, tail = stamp["summary"]
            self.outstream.write(f"{stamp['lines']}{head}{time.monotonic() - self.started:.1f}{tail}\n")
            self.outstream.flush()

    return NoopReporter


# --- noting what a normal run reads ---------------------------------------------------------
class _Recorder:
    def __init__(self):
        self.paths: dict[str, tuple[bool, bool]] = {}  # path -> (stat follows symlinks, listed)
        self.vetoed: str | None = None
        self.active = True
        self.skip = stamp_path()
        self.db = os.path.abspath(dep_file())
        self.restore = (os.stat, os.lstat)  # what stop() puts back; record() wraps them next

    def note(self, path, follow: bool = True, listed: bool = False) -> None:
        if not self.active or isinstance(path, int):
            return
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(self.db) or path == self.skip:
            return
        was_follow, was_listed = self.paths.get(path, (follow, listed))
        self.paths[path] = (was_follow, was_listed or listed)

    def veto(self, why: str) -> None:
        if self.active and self.vetoed is None:
            self.vetoed = why
            self.stop()  # no stamp can come of this run: noting more only costs (15% of a cold warm's CPU)

    def stop(self) -> None:
        """Note nothing more: os.stat, os.lstat and stderr as they were; the audit hook goes quiet."""
        self.active = False
        os.stat, os.lstat = self.restore
        if isinstance(sys.stderr, _StderrWatch):
            sys.stderr = sys.stderr._stream

    def audit(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if isinstance(path, int) or path is None:
                return
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and not os.path.abspath(os.fsdecode(path)).startswith(self.db):
                self.veto(f"wrote {os.fsdecode(path)}")
            elif not writes:
                self.note(path)
        elif event in ("os.listdir", "os.scandir"):
            self.note(args[0] if args and args[0] is not None else ".", listed=True)
        elif event.startswith(_VETO_PREFIXES):
            self.veto(event)


class _StderrWatch:
    """stderr as it was, noting that something was written to it."""

    def __init__(self, stream, recorder: _Recorder):
        self._stream, self._recorder = stream, recorder

    def write(self, text):
        if text:
            self._recorder.veto("wrote to stderr")
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Tee:
    """The reporter's stream, keeping a copy of what went through it."""

    def __init__(self, stream):
        self._stream, self.text = stream, []

    def write(self, text):
        self.text.append(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


_recorder: _Recorder | None = None


def record() -> None:
    """Note what this run reads, if it is a plain `doit warm` that could save a stamp."""
    global _recorder
    if _recorder is not None or os.environ.get(ENV) == "off" or not _is_plain_warm(sys.argv[1:]):
        return
    rec = _recorder = _Recorder()
    sys.addaudithook(rec.audit)  # cannot be removed: it goes quiet once `active` is off
    real_stat, real_lstat = os.stat, os.lstat

    def stat(path, *args, dir_fd=None, follow_symlinks=True):
        if dir_fd is None:
            rec.note(path, follow_symlinks)
        return real_stat(path, *args, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    def lstat(path, *args, dir_fd=None):
        if dir_fd is None:
            rec.note(path, False)
        return real_lstat(path, *args, dir_fd=dir_fd)

    os.stat, os.lstat = stat, lstat
    sys.stderr = _StderrWatch(sys.stderr, rec)


def recording() -> bool:
    return _recorder is not None and _recorder.active


def save(tee: Tee, summary_head: str, summary_tail: str, targets: list[str]) -> str | None:
    """Stop noting; save the stamp of this no-op run. Returns why none was saved, if not."""
    rec = _recorder
    if rec is None:
        return "not recording"
    if rec.vetoed:
        return rec.vetoed
    if not rec.active:
        return "not recording"
    rec.stop()
    for module in list(sys.modules.values()):  # the code that answered, jitwarm's and the rest
        if isinstance(getattr(module, "__file__", None), str):
            rec.paths.setdefault(os.path.abspath(module.__file__), (True, False))
    recent = time.time_ns() - RACY_NS
    paths = []
    for path, (follow, listed) in rec.paths.items():
        signature = _signature(path, follow, listed)
        if isinstance(signature, tuple) and len(signature) == 6 and max(signature[4], signature[5]) > recent:
            content = _content(path)
            if content is None:
                return f"{path} changed in the last {RACY_NS // 10**9} s and cannot be checksummed"
            signature += (content,)
        paths.append((path, follow, listed, signature))
    stamp = {"key": _key(), "paths": paths, "lines": "".join(tee.text), "summary": (summary_head, summary_tail),
             "targets": list(targets)}
    tmp = f"{stamp_path()}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            marshal.dump(stamp, f)
        os.replace(tmp, stamp_path())
    except OSError as exc:
        return f"could not write {stamp_path()}: {exc.strerror}"
    return None
