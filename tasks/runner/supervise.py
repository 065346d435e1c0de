"""Run a child in its own session with a timeout; on every exit path, end its whole tree.

Descendants are tracked by polling (each tracked process's children as /proc lists them,
else psutil's process table). This process also becomes a child
subreaper (Linux), so a grandchild that starts its own session and is orphaned before a
poll sees it is re-parented here and still found. Processes we never started are never
signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil

from tasks.state.records import log_tail  # noqa: F401  (callers read a log's tail from here too)

GRACE_S = float(os.environ.get("JITWARM_KILL_GRACE_S", "5"))
_POLL_S = 0.1


@dataclass
class ProcessEnd:
    returncode: int | None
    timed_out: bool
    seconds: float
    log: Path
    matched: str | None = None  # the failure line that ended the run early

    def tail(self, lines: int = 30) -> list[str]:
        return log_tail(self.log, lines)

    def describe(self) -> str:
        if self.matched:
            return f"stopped on log line {self.matched!r}"
        if self.timed_out:
            return f"timed out after {self.seconds:.0f}s"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"killed by {name}"
        return f"exited with code {self.returncode}"


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    # Not Linux: orphans that escape between two polls cannot be followed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _own_children() -> set[int]:
    return {c.pid for c in _Table().children_of(os.getpid())}


class _Table:
    """Who is whose child, read once per poll. Linux lists each thread's children in
    /proc/<pid>/task/<tid>/children, so only the tracked tree is read; elsewhere, one pass
    over the whole process table. (psutil's children() reads every process on the machine:
    ~10 ms a call with 200 processes, once per tracked process and poll, most of a warm's
    own CPU time on a busy host.)"""

    def __init__(self):
        self._by_parent: dict[int, list[psutil.Process]] | None = None  # the whole table, if needed

    def children_of(self, pid: int) -> list[psutil.Process]:
        pids = _proc_children(pid)
        if pids is None:
            return list(self._scan().get(pid, ()))
        found = []
        for child in pids:
            with contextlib.suppress(psutil.Error):  # gone since the kernel listed it
                found.append(psutil.Process(child))
        return found

    def descendants(self, roots) -> list[psutil.Process]:
        """Every process below `roots` (living psutil.Process objects); a process older than
        its listed parent holds a reused pid and is no descendant (psutil's own check)."""
        found, stack, visited = [], [p for p in roots if _alive(p)], set()
        while stack:
            parent = stack.pop()
            if parent.pid in visited:
                continue
            visited.add(parent.pid)
            for child in self.children_of(parent.pid):
                try:
                    if child.create_time() < parent.create_time():
                        continue
                except psutil.Error:
                    continue
                found.append(child)
                stack.append(child)
        return found

    def _scan(self) -> dict[int, list[psutil.Process]]:
        if self._by_parent is None:
            self._by_parent = defaultdict(list)
            for proc in psutil.process_iter(["ppid"]):
                self._by_parent[proc.info["ppid"]].append(proc)
        return self._by_parent


def _proc_children(pid: int) -> list[int] | None:
    """The children of `pid` as /proc lists them for each of its threads; [] once it is gone;
    None where the kernel keeps no such list (no CONFIG_PROC_CHILDREN, not Linux)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return [] if os.path.isdir("/proc/self/task") else None
    except OSError:
        return None
    found = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(child) for child in fh.read().split()]
        except FileNotFoundError:
            if os.path.isdir(f"/proc/{pid}/task/{tid}"):
                return None  # the thread is there, its list is not: the kernel has none
        except (OSError, ValueError):
            continue  # a thread that just ended
    return found


@dataclass
class Job:
    """One child to supervise: argv, environment, log file, limits; `proc` if `spawn`
    already started it."""

    argv: list[str]
    env: dict | None
    log: Path
    timeout: float
    cwd: Path | None = None
    fail_patterns: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None


def run(argv: list[str], env: dict, log: Path, timeout: float, cwd: Path | None = None,
        fail_patterns: tuple[str, ...] = (), on_poll=None, proc: subprocess.Popen | None = None) -> ProcessEnd:
    """Run argv with its output in `log`; end it on exit, timeout, a `fail_patterns` line
    in its output, or KeyboardInterrupt (which is re-raised after the tree is ended).
    With `proc` (from `spawn`), supervise that process instead of starting argv."""
    return run_all([Job(argv, env, log, timeout, cwd, fail_patterns, proc)], on_poll)[0]


def spawn(argv: list[str], env: dict | None, log: Path, cwd: Path | None = None,
          stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """Start argv in its own session with its output in `log`, as `run` does; pass it to
    `run(proc=...)` later to supervise it from then on."""
    _become_subreaper()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def run_all(jobs: list[Job], on_poll=None) -> list[ProcessEnd]:
    """Run several children at once, each supervised as `run` describes, in one loop."""
    _become_subreaper()
    already_ours = _own_children()
    children = [_Child(job) for job in jobs]
    roots = {c.proc.pid for c in children}
    try:
        while any(c.outcome is None for c in children):
            table = _Table()
            for child in children:
                if child.outcome is None:
                    child.poll(table, already_ours, roots, single=len(children) == 1)
            if on_poll is not None:
                on_poll()
            running = [c for c in children if c.outcome is None]
            if running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running[0].proc.wait(timeout=_POLL_S)  # returns the moment it exits
    finally:
        # Runs on success, timeout, crash and KeyboardInterrupt alike.
        for child in children:
            child.finish(already_ours, roots, single=len(children) == 1)
        # Orphans re-parented to us that no child could claim (e.g. a grandchild that
        # started its own session after its parent died unseen) still came from this run.
        stray: dict[int, psutil.Process] = {}
        _adopt(_Table(), stray, already_ours, roots, pgid=None, take_all=True)
        _end(stray)
    return [c.outcome for c in children]


class _Child:
    def __init__(self, job: Job):
        self.job = job
        self.started = time.monotonic()
        self.proc = job.proc or spawn(job.argv, job.env, job.log, job.cwd)
        self.seen: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):  # it may already be gone
            self.seen[self.proc.pid] = psutil.Process(self.proc.pid)
        self.scanner = _LogScanner(job.log, job.fail_patterns)
        self.outcome: ProcessEnd | None = None
        self._ended = False

    def track(self, table: _Table, already_ours: set[int], roots: set[int], single: bool) -> None:
        # This child's session id is its pid (start_new_session), and so is its group.
        _adopt(table, self.seen, already_ours, roots - {self.proc.pid}, pgid=self.proc.pid, take_all=single)
        for child in table.descendants(list(self.seen.values())):
            self.seen.setdefault(child.pid, child)

    def poll(self, table: _Table, already_ours: set[int], roots: set[int], single: bool) -> None:
        self.track(table, already_ours, roots, single)
        matched = self.scanner.scan()
        timed_out = time.monotonic() - self.started > self.job.timeout
        if self.proc.poll() is not None or matched or timed_out:
            self.finish(already_ours, roots, single, matched, timed_out and not matched)

    def finish(self, already_ours: set[int], roots: set[int], single: bool,
               matched: str | None = None, timed_out: bool = False) -> None:
        if self._ended:
            return
        self._ended = True
        self.proc.poll()
        self.track(_Table(), already_ours, roots, single)
        _signal_group(self.proc.pid, signal.SIGTERM)
        _end(self.seen, group=self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        matched = matched or self.scanner.scan()
        self.outcome = ProcessEnd(self.proc.returncode, timed_out, time.monotonic() - self.started,
                               self.job.log, matched)


def _adopt(table: _Table, seen: dict[int, psutil.Process], already_ours: set[int], others: set[int],
           pgid: int | None, take_all: bool) -> None:
    """Claim our new direct children: the worker itself and orphans re-parented to us
    (we are a subreaper). An orphan is claimed by its process group, or by anyone when
    only one child is supervised; other supervised workers are never claimed."""
    candidates = [c for c in table.children_of(os.getpid()) if c.pid not in already_ours and c.pid not in others]
    for proc in candidates:
        try:
            mine = take_all or os.getpgid(proc.pid) == pgid
        except OSError:
            continue
        if mine:
            seen.setdefault(proc.pid, proc)


def _end(seen: dict[int, psutil.Process], group: int | None = None) -> None:
    """SIGTERM everything in `seen`, wait GRACE_S, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in seen.values() if _running(p)]
        if group is not None:
            _signal_group(group, sig)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)  # psutil checks the pid was not reused
        _, alive = psutil.wait_procs(alive, timeout=GRACE_S if sig == signal.SIGTERM else 5)
        if not alive:
            break
    _reap(seen)


def _reap(seen: dict[int, psutil.Process], patience: float = 2.0) -> None:
    """Collect dead descendants re-parented to us (we are a subreaper), so no zombie
    lingers; a zombie may take a moment to be handed over once its parent is gone."""
    deadline = time.monotonic() + patience
    pending = set(seen)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not (or not yet) our child
                try:
                    proc = psutil.Process(pid)
                    # Alive, or a zombie whose living parent will reap it: not ours to wait for.
                    if proc.status() != psutil.STATUS_ZOMBIE or proc.ppid() not in (0, 1):
                        pending.discard(pid)
                except psutil.NoSuchProcess:
                    pending.discard(pid)
                continue
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.02)


class _LogScanner:
    """Finds the first line containing one of `patterns` in a growing log file."""

    def __init__(self, log: Path, patterns: tuple[str, ...]):
        self.log, self.patterns = log, tuple(p.encode() for p in patterns)
        self.offset, self.partial = 0, b""

    def scan(self) -> str | None:
        if not self.patterns:
            return None
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return None
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()[-4096:]  # an unfinished line, kept for the next scan
        for line in lines + [self.partial]:
            if any(p in line for p in self.patterns):
                return line.decode("utf-8", errors="replace").strip()[:300]
        return None


def _alive(p: psutil.Process) -> bool:
    """Still the process we saw (its pid not reused), zombie or not."""
    try:
        return p.is_running()
    except psutil.Error:
        return False


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
