"""Run state (tasks/session.py): the fingerprint is computed once, events reach only the listening process."""

import os

from tasks import session as run_state
from tasks.session import Session


def test_the_fingerprint_is_computed_once_and_timed():
    calls = []
    session = Session(root=None, settings=None, compute_fingerprint=lambda: calls.append(1) or {"nvcc": "13.0"})
    assert session.fingerprint == {"nvcc": "13.0"} and session.fingerprint is session.fingerprint
    assert calls == [1] and session.fingerprint_seconds is not None


def test_events_reach_listeners_in_the_listening_process_only_and_never_raise():
    seen = []
    run_state.listen(lambda kind, data: seen.append((kind, data["name"])))
    run_state.listen(lambda kind, data: 1 / 0)  # a broken display must not fail the warm
    try:
        run_state.emit("target_ready", name="a")
        pid = os.fork()
        if pid == 0:  # a `doit -n` worker: its copy of the listeners stays silent
            run_state.emit("target_ready", name="from-the-fork")
            os._exit(0 if not [s for s in seen if s[1] == "from-the-fork"] else 1)
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        run_state._listeners.clear()
    assert seen == [("target_ready", "a")]


def test_each_write_voids_earlier_answers():
    before = run_state.generation
    run_state.wrote()
    assert run_state.generation == before + 1
