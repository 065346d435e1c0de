"""Run directories under <root>/jitwarm/staging/ (a pool run's replay views, a fallback's
view), named after the host, process and time that made them.

A run removes its own in a `finally`, which a `kill -9` skips: each dead run used to
leave a view of hard links to every entry behind, which a restored CI cache carried
along. `sweep`, at the start of every `doit warm` (tasks/cli/reporter.py), publishes
whatever complete entries a dead run's views hold (nothing built is lost) and removes
them; runs that are alive, or on another host, are left alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import psutil

from tasks.state import cacheview, records
from tasks.state.cacheroot import CacheRoot

HOST = socket.gethostname().replace("/", "_")


def run_dir(root: Path, kind: str) -> Path:
    """A new run directory's path: <kind>-<host>-<pid>-<milliseconds>."""
    return records.state_dir(root) / "staging" / f"{kind}-{HOST}-{os.getpid()}-{int(time.time() * 1000)}"


def sweep(cache: CacheRoot) -> int:
    """Salvage and remove the run directories of dead runs on this host; return how many."""
    swept = 0
    base = records.state_dir(cache.path) / "staging"
    with contextlib.suppress(OSError):
        for path in list(base.iterdir()):
            if path.is_dir() and _dead(path.name):
                for view in [*path.glob("view-*"), *path.glob("shared/view-*"), path]:
                    cacheview.salvage(view, cache)  # the last one removes the whole run dir
                swept += 1
    return swept


def _dead(name: str) -> bool:
    """Whether the run that made this directory has ended (False when unsure)."""
    head, _, rest = name.partition("-")
    host, _, tail = rest.rpartition("-")
    host, _, pid = host.rpartition("-")
    if head not in ("pool", "fallback") or host != HOST or not pid.isdigit() or not tail.isdigit():
        return False
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    return started > int(tail) / 1000 + 1  # the pid now belongs to a later process
