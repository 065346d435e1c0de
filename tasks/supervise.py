"""Run a child in its own session with a timeout; on every exit path, end its whole tree.

Descendants are tracked by polling (psutil). This process also becomes a child
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
from dataclasses import dataclass
from pathlib import Path

import psutil

GRACE_S = float(os.environ.get("JITWARM_KILL_GRACE_S", "5"))
_POLL_S = 0.1
_TAIL_BYTES = 256 * 1024


@dataclass
class Outcome:
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


def log_tail(path: Path, lines: int = 30) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    # Not Linux: orphans that escape between two polls cannot be followed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _own_children() -> set[int]:
    try:
        return {c.pid for c in psutil.Process().children()}
    except psutil.Error:
        return set()


_active_roots: set[int] = set()  # workers of concurrent runs in this process (doit -P thread)


def run(argv: list[str], env: dict, log: Path, timeout: float, cwd: Path | None = None,
        fail_patterns: tuple[str, ...] = (), on_poll=None) -> Outcome:
    """Run argv with its output in `log`; end it on exit, timeout, a `fail_patterns` line
    in its output, or KeyboardInterrupt (which is re-raised after the tree is ended)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    _become_subreaper()
    already_ours = _own_children()
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)
    _active_roots.add(proc.pid)
    seen: dict[int, psutil.Process] = {}
    timed_out, matched = False, None
    scanner = _LogScanner(log, fail_patterns)
    try:
        while proc.poll() is None:
            _track(proc.pid, seen, already_ours)
            if on_poll is not None:
                on_poll()
            matched = scanner.scan()
            if matched:
                break
            if time.monotonic() - started > timeout:
                timed_out = True
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_POLL_S)  # returns the moment the child exits
    finally:
        # Runs on success, timeout, crash and KeyboardInterrupt alike.
        end_tree(proc, seen, already_ours)
        _active_roots.discard(proc.pid)
    matched = matched or scanner.scan()
    return Outcome(proc.returncode, timed_out, time.monotonic() - started, log, matched)


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


def _track(root_pid: int, seen: dict[int, psutil.Process], already_ours: set[int]) -> None:
    """Add every descendant: our new children (the worker, and orphans re-parented to us)
    plus the children of everything seen so far, so re-parented grandchildren stay found."""
    try:
        fresh = [c for c in psutil.Process().children()
                 if c.pid not in already_ours and (c.pid == root_pid or c.pid not in _active_roots)]
    except psutil.Error:
        fresh = []
    for proc in fresh + list(seen.values()):
        seen.setdefault(proc.pid, proc)
        try:
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            continue


def end_tree(proc: subprocess.Popen, seen: dict[int, psutil.Process], already_ours: set[int]) -> None:
    """SIGTERM everything we started, wait GRACE_S, then SIGKILL what is left."""
    proc.poll()
    _track(proc.pid, seen, already_ours)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in seen.values() if _running(p)]
        _signal_group(proc.pid, sig)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)  # psutil checks the pid was not reused
        _, alive = psutil.wait_procs(alive, timeout=GRACE_S if sig == signal.SIGTERM else 5)
        if not alive and proc.poll() is not None:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
