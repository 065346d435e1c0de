"""The one home of run state: what this process knows about its run (as doit's globals.py).

A `Session` is built once per `doit` process (tasks/cli/doit_tasks.py) and passed to every
action: the cache root, the settings, the toolchain fingerprint (computed once, on first
use), this run's selection and checks, the batch queue and the prestarted pool process.
`current()` returns it for the reporter, which doit builds before any action runs.

Process-wide, beside it: the write generation (bumped on every record this process
writes, so staleness answers computed before are void) and the progress events the
warm's code emits for the reporter. Only the process doit runs in listens; `doit -n`
forks copy the listeners, which must stay silent there.

This module imports no other jitwarm module, so every layer may use it.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

import msgspec

MAIN_PID = os.getpid()  # the process doit runs in; with `doit -n` actions run in forked workers
# A warm compares every recorded entry's digest; `doit stale` and `doit list` only those whose mtime moved.
verify_digests = False


class Session(msgspec.Struct, eq=False, dict=True):
    root: Any  # tasks.state.cacheroot.CacheRoot: the cache roots and their layout
    settings: Any  # tasks.host.settings.Settings
    compute_fingerprint: Callable[[], dict]
    shard_option: str = ""  # what `doit warm --shard` said; the shape tasks follow the same split
    selection: Any = None  # tasks.plan.sharding.Selection of this run
    checks: dict = msgspec.field(default_factory=dict)  # target name -> its doit uptodate check
    pending: dict = msgspec.field(default_factory=dict)  # shape key -> (work, dependents) queued for the batch
    standby: Any = None  # ((root, store), process): the pool process started early
    fingerprint_seconds: float | None = None  # how long computing the fingerprint took
    write_error: str | None = None  # the first failed write into the cache root this run (one line)

    @functools.cached_property
    def fingerprint(self) -> dict:
        started = time.monotonic()
        fp = self.compute_fingerprint()
        self.fingerprint_seconds = round(time.monotonic() - started, 3)
        return fp

    @property
    def shape_timeout_s(self) -> float:
        return self.settings.shape_timeout_s


_current: Session | None = None


def start(session: Session) -> Session:
    global _current
    _current = session
    return session


def current() -> Session | None:
    return _current


# --- interrupts ---------------------------------------------------------------------------
EXIT_ON_SIGNAL = {2: 130, 15: 143}  # SIGINT, SIGTERM: the shell's 128 + signal
interrupted: int | None = None  # the signal that interrupted this run, once one has


# --- records written by this process ------------------------------------------------------
generation = 0


def wrote() -> None:
    global generation
    generation += 1


# --- progress events ------------------------------------------------------------------------
_listeners: list[Callable[[str, dict], None]] = []
_owner = 0  # the pid that listens


def listen(callback: Callable[[str, dict], None]) -> None:
    global _owner
    _owner = os.getpid()
    _listeners.append(callback)


def forget(callback: Callable[[str, dict], None]) -> None:
    if callback in _listeners:
        _listeners.remove(callback)


def emit(kind: str, **data) -> None:
    """kind: "shape_done" (key, ok), "target_ready" (name) or "pulled" (names). Never raises into the warm."""
    if os.getpid() != _owner:
        return
    data.setdefault("at", time.monotonic())
    for callback in list(_listeners):
        try:
            callback(kind, data)
        except Exception:  # a display problem must not fail a warm
            pass
