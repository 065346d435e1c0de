"""In-process progress events: the warm's code says what happened, the reporter listens.

Only the process doit runs in has listeners; under `doit -n` the forked workers emit
into the void and the reporter falls back to what doit itself tells it.
"""

from __future__ import annotations

import os
import time
from typing import Callable

_listeners: list[Callable[[str, dict], None]] = []
_owner = 0  # the pid that listens; `doit -n` forks copy the listeners, which must stay silent there


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
