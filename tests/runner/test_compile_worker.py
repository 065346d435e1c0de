"""The compile worker's loop (tasks/runner/child/compile.run) against a stand-in worker:
when deferred calls are made again."""

from __future__ import annotations

import os
from collections import Counter

from tasks.runner.child import compile, protocol


class _Worker:
    """Calls of M >= 100 need kernel "K", which another worker builds until `finish_after` takes."""

    def __init__(self, plan):
        self.made: Counter = Counter()
        self.building = {"K"}
        self.done, self.captured, self.eager = Counter(), 0, set()
        self.capture_errors, self.ran_after_failure = {}, 0

    def attempt(self, calls):
        busy = []
        for call in calls:
            self.made[tuple(call)] += 1
            if call[1] >= 100 and "K" in self.building:
                busy.append((tuple(call), "K"))
            else:
                self.done[call[0]] += 1
        return busy

    def built(self, key):
        return key not in self.building

    def sync(self):
        pass


def _run(monkeypatch, finish_after: int | None):
    workers = []

    def make(plan, made=None):
        workers.append(_Worker(plan))
        return workers[-1]

    monkeypatch.setattr(compile, "_Worker", make)
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


def test_calls_whose_kernel_is_still_building_at_the_end_wait_for_it_once(monkeypatch):
    waits = []
    original = _Worker.attempt

    def attempt(self, calls):
        waits.extend(os.environ["JITWARM_NVCC_WAIT"] for _ in calls)
        return original(self, calls)

    monkeypatch.setattr(_Worker, "attempt", attempt)
    result, worker = _run(monkeypatch, finish_after=None)
    assert result.deferred == 400
    assert {m for (_, m), n in worker.made.items() if n == 2} == set(range(100, 500))
    assert waits.count("1") == 400 and waits[-400:] == ["1"] * 400  # made last, waiting for the builder
