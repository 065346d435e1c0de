"""The compile worker's loop (tasks/runner/child/compile.run) against a stand-in worker:
when deferred calls are made again."""

from __future__ import annotations

import os
import time
from collections import Counter

from tasks.runner.child import compile, protocol


class _Worker:
    """Calls of M in 100..299 need kernel "K", of M >= 300 kernel "L" ("K" alone with `one_key`),
    which the kernel queue builds until a test says they landed. A call made waiting
    (JITWARM_NVCC_WAIT=1) builds its kernel itself, as the shim then does."""

    def __init__(self, plan, one_key=True):
        self.made: Counter = Counter()
        self.order: list = []  # calls in the order they were made
        self.building = {"K", "L"}
        self.one_key = one_key
        self.failed: set = set()  # kernels the queue gave up on
        self.slots, self.queued = 4, 0  # nvcc slots, and kernels requested but not built
        self.done, self.captured, self.eager = Counter(), 0, set()
        self.capture_errors, self.ran_after_failure = {}, 0

    def key(self, m):
        return None if m < 100 else "K" if m < 300 or self.one_key else "L"

    def attempt(self, calls):
        busy = []
        for call in calls:
            self.made[tuple(call)] += 1
            key = self.key(call[1])
            if key in self.building and os.environ["JITWARM_NVCC_WAIT"] == "1":
                self.building.discard(key)
            if key in self.building:
                busy.append((tuple(call), key))
            else:
                self.done[call[0]] += 1
                self.order.append(call[1])
        return busy

    def built(self, key):
        return key not in self.building

    def given_up(self, key):
        return key in self.failed

    def backlog(self):
        return self.queued

    def sync(self):
        pass


class _Clock:
    """compile.py's `time`, whose sleep (a draining worker's poll) runs `on_poll` instead."""

    monotonic, process_time = staticmethod(time.monotonic), staticmethod(time.process_time)

    def __init__(self, on_poll):
        self.on_poll, self.polls = on_poll, 0

    def sleep(self, seconds):
        self.polls += 1
        self.on_poll(self.polls)


def _run(monkeypatch, finish_after: int | None, one_key=True, on_poll=lambda polls: None):
    workers = []

    def make(plan, made=None):
        workers.append(_Worker(plan, one_key))
        return workers[-1]

    monkeypatch.setattr(compile, "_Worker", make)
    monkeypatch.setattr(compile, "time", _Clock(lambda polls: on_poll(workers[0], polls)))
    chunks = [[(0, m) for m in range(i * 50, i * 50 + 50)] for i in range(10)]
    taken = 0

    def take():
        nonlocal taken
        if finish_after is not None and taken == finish_after:
            workers[0].building.clear()
        taken += 1
        return chunks[taken - 1] if taken <= len(chunks) else []

    plan = protocol.CompilePlan(module="x", shapes=[protocol.Shape("GEMM_NT_F8F8BF16", 1, 1, 1)], rows=[500],
                                busy_flag="unused", first_call=None)
    return compile.run(plan, take), workers[0]


def test_a_deferred_call_is_made_again_once_its_kernel_is_built_not_after_every_take(monkeypatch):
    result, worker = _run(monkeypatch, finish_after=6)
    # Chunks 2..5 (M 100..299) met K while it was building; chunk 6 onwards found it built.
    assert result.deferred == 200
    assert {m for (_, m), n in worker.made.items() if n == 2} == set(range(100, 300))
    assert {m for (_, m), n in worker.made.items() if n == 1} == set(range(100)) | set(range(300, 500))
    assert sum(result.done.values()) == 500


def _lands(**after_polls):
    """Kernel keys that land in the store once the draining worker has polled that many times."""
    def on_poll(worker, polls):
        worker.building -= {key for key, n in after_polls.items() if polls >= n}
    return on_poll


def _waits(monkeypatch) -> list:
    """(JITWARM_NVCC_WAIT, M) of every call the worker makes."""
    waits = []
    original = _Worker.attempt

    def attempt(self, calls):
        waits.extend((os.environ["JITWARM_NVCC_WAIT"], call[1]) for call in calls)
        return original(self, calls)

    monkeypatch.setattr(_Worker, "attempt", attempt)
    return waits


def test_calls_whose_kernel_is_still_building_at_the_end_are_made_once_it_lands_without_waiting(monkeypatch):
    waits = _waits(monkeypatch)
    result, worker = _run(monkeypatch, finish_after=None, on_poll=_lands(K=3))
    assert result.deferred == 400
    assert {m for (_, m), n in worker.made.items() if n == 2} == set(range(100, 500))
    assert not [m for wait, m in waits if wait == "1"]  # none waited in the shim: the queue's build landed
    assert sum(result.done.values()) == 500


def test_at_the_end_the_calls_whose_kernel_landed_go_first(monkeypatch):
    result, worker = _run(monkeypatch, finish_after=None, one_key=False, on_poll=_lands(L=2, K=5))
    assert worker.order[:100] == list(range(100))
    assert worker.order[100:300] == list(range(300, 500))  # L's calls, made while K still built
    assert worker.order[300:] == list(range(100, 300))


def test_a_kernel_the_queue_could_not_build_is_compiled_by_the_first_call_that_needs_it(monkeypatch):
    waits = _waits(monkeypatch)

    polls = []

    def fail_k(worker, n):
        polls.append(n)
        worker.failed.add("K")

    result, _ = _run(monkeypatch, finish_after=None, on_poll=fail_k)
    assert [m for wait, m in waits if wait == "1"] == [100]  # its shim compiles K here, so nvcc's error shows
    assert polls == [1]  # at once, not after DRAIN_STALL_S
    assert sum(result.done.values()) == 500


def test_a_drain_where_nothing_lands_for_long_makes_one_call_waiting(monkeypatch):
    waits = _waits(monkeypatch)
    monkeypatch.setattr(compile, "DRAIN_STALL_S", 0.0)
    result, _ = _run(monkeypatch, finish_after=None)
    assert [m for wait, m in waits if wait == "1"] == [100]
    assert sum(result.done.values()) == 500


def test_a_take_that_only_bounces_waits_for_a_kernel_while_nvcc_has_enough_queued(monkeypatch):
    polls = []

    def lands_k(worker, n):
        polls.append(n)
        if n == 3:
            worker.building.discard("K")

    monkeypatch.setattr(compile, "_Worker", lambda plan, made=None: worker)
    worker = _Worker(None)
    worker.queued = 8  # two rounds of the stand-in's four nvcc slots
    monkeypatch.setattr(compile, "time", _Clock(lambda n: lands_k(worker, n)))
    chunks = iter([[(0, m) for m in range(100, 150)], [(0, m) for m in range(150, 200)]])
    plan = protocol.CompilePlan(module="x", shapes=[protocol.Shape("GEMM_NT_F8F8BF16", 1, 1, 1)], rows=[500],
                                busy_flag="unused", first_call=None)
    result = compile.run(plan, lambda: next(chunks, []))
    assert polls == [1, 2, 3]  # the first take bounced whole: it waited until K landed
    assert result.deferred == 50 and worker.made[(0, 150)] == 1  # the next take found K built


def test_no_wait_while_the_kernel_queue_has_too_little_to_do(monkeypatch):
    result, worker = _run(monkeypatch, finish_after=None, on_poll=_lands(K=3))
    # The stand-in's queue holds nothing: bounced takes go on at once, and only the drain waited.
    assert result.deferred == 400 and sum(result.done.values()) == 500
