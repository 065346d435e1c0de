"""GPU memory arithmetic (tasks/plan/gpumem.py): sglang's buffer formulas and its max_m halving."""

from __future__ import annotations

import pytest

from tasks.plan import gpumem
from tasks.plan.planner import GemmShape, Kind
from tasks.plan.targets import ShapeWork

pytestmark = pytest.mark.both_layouts

GIB = gpumem.GIB

def work(n, k, m_values, kind=Kind.NORMAL, groups=1):
    return ShapeWork(GemmShape(kind, n, k, groups), tuple(m_values))


def test_masked_buffers_are_small_and_sglang_formula_holds_for_normal():
    normal = gpumem.buffer_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    # compile_utils.py:273-281 with the Hopper scale workspace (lines 335-336): max_m*k + n*k
    # + max_m*n*2 + lhs scales + rhs scales + ceil_align(max_m, 4) * ceil(k/128) * 4.
    assert normal == 16384 * 2048 + 7168 * 2048 + 16384 * 7168 * 2 + 16384 * 16 * 4 + 56 * 16 * 4 + 16384 * 16 * 4
    block32 = gpumem.buffer_bytes("GEMM_NT_F8F8BF16_BLOCK32", 7168, 2048, 1, 16384)
    assert block32 == 16384 * 2048 + 7168 * 2048 + 16384 * 7168 * 2 + 2 * 16384 * 64 * 4 + 224 * 64 * 4
    assert gpumem.buffer_bytes("GEMM_NT_BF16BF16F32", 256, 7168, 1, 16384) == (
        16384 * 7168 * 2 + 256 * 7168 * 2 + 16384 * 256 * 4)  # compile_utils.py:293-295
    masked = gpumem.buffer_bytes("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32, 16384)
    full_sglang = 32 * 16384 * 7168 + 32 * 4096 * 7168 + 32 * 4 + 32 * 16384 * 4096 * 2
    assert masked < full_sglang / 5


def test_memory_reduction_halves_max_m_like_sglang_and_reports_it():
    big = work(32768, 7168, range(1, 65537))
    need_16k = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 32768, 7168, 1, 16384)
    values, reduced = gpumem.reduce_to_fit("GEMM_NT_F8F8BF16", 32768, 7168, 1, big.m_values, need_16k + 1)
    assert reduced == 16384 and values[-1] == 16384 and len(values) == 16384
    none, floor = gpumem.reduce_to_fit("GEMM_NT_F8F8BF16", 32768, 7168, 1, big.m_values, GIB)
    assert none == () and floor == gpumem.REDUCE_FLOOR
