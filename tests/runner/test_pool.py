"""The compile pool's sizing: how many workers fit in GPU memory (tasks/runner/pool.py)."""

from __future__ import annotations

import pytest

from tasks.runner import pool
from tasks.host import gpu
from tasks.plan import gpumem
from tasks.plan.planner import GemmShape, Kind
from tasks.plan.targets import ShapeWork

pytestmark = pytest.mark.both_layouts

GIB = gpumem.GIB

def work(n, k, m_values, kind=Kind.NORMAL, groups=1):
    return ShapeWork(GemmShape(kind, n, k, groups), tuple(m_values))


def one_gpu(free: int) -> list[gpu.Device]:
    return [gpu.Device("0", free)]


def test_pool_size_is_bounded_by_free_memory():
    works = [work(7168, 2048, range(1, 16385))]
    report = pool.PoolRun()
    per_worker = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    slots = pool.plan_memory(works, report, cores=16, devices=one_gpu(4 * per_worker + 2 * GIB), margin=2 * GIB)
    assert slots == 4 and not report.reduced and report.devices == [("0", 4)]
    assert pool.plan_memory(works, pool.PoolRun(), cores=16, devices=[], margin=0) == 16


def test_every_gpu_takes_the_workers_its_own_memory_holds():
    works = [work(7168, 2048, range(1, 16385))]
    per_worker = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    eight = [gpu.Device(str(i), 20 * per_worker) for i in range(8)]
    report = pool.PoolRun()
    assert pool.plan_memory(works, report, cores=128, devices=eight, margin=0) == 128  # cores bind, not memory
    assert report.devices == [(str(i), 20) for i in range(8)] and report.replay_slots == 128
    # A GPU busy with something else takes fewer; one with no room for a worker takes none.
    uneven = [gpu.Device("0", 3 * per_worker), gpu.Device("1", per_worker // 2), gpu.Device("2", 5 * per_worker)]
    report = pool.PoolRun()
    assert pool.plan_memory(works, report, cores=128, devices=uneven, margin=0) == 8
    assert report.devices == [("0", 3), ("2", 5)]
