"""The compile pool's sizing: how many workers fit in GPU memory (tasks/build/pool.py)."""

from __future__ import annotations

import pytest

from tasks.build import pool
from tasks.plan import gpumem
from tasks.plan.planner import GemmShape, Kind
from tasks.plan.targets import ShapeWork

pytestmark = pytest.mark.both_layouts

GIB = gpumem.GIB

def work(n, k, m_values, kind=Kind.NORMAL, groups=1):
    return ShapeWork(GemmShape(kind, n, k, groups), tuple(m_values))


def test_pool_size_is_bounded_by_free_memory():
    works = [work(7168, 2048, range(1, 16385))]
    report = pool.PoolRun()
    per_worker = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    slots = pool.plan_memory(works, report, cores=16, free=4 * per_worker + 2 * GIB, margin=2 * GIB)
    assert slots == 4 and not report.reduced
    assert pool.plan_memory(works, pool.PoolRun(), cores=16, free=None, margin=0) == 16
