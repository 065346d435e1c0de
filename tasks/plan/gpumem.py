"""What each of the warm's workers needs in GPU memory: sglang's buffer formulas. Pure.

Workers share one GPU, so their buffers plus a per-process CUDA context must fit in free
memory (tasks/host/gpu.py) minus a margin; what does not fit is cut as sglang cuts it.
"""

from __future__ import annotations

GIB = 1 << 30
# A CUDA context with torch and deep_gemm loaded, plus allocator slack (seen ~0.5 GiB on H100).
CONTEXT_BYTES = 1 * GIB
REDUCE_FLOOR = 2048  # sglang 0.5.23 stops halving max_m here (compile_utils.py:229-236)
BLOCK = 128
# Masked GEMMs pick their kernel from expected_m, not the buffer: on an H100 with
# sgl-deep-gemm 0.1.2, 64-row buffers selected the same kernels as 16384-row ones
# (bench/results/masked_buffers-h100-2026-11-22.json), at a fraction of the memory.
MASKED_ROWS = 64


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def buffer_bytes(kind: str, n: int, k: int, groups: int, max_m: int) -> int:
    """Device bytes a worker's executor (runner/child/executors.py) allocates for one shape:
    sglang 0.5.23's get_memory_requirement (compile_utils.py:285-356) with Hopper's
    TMA-aligned FP32 scale workspace (lines 373-386), masked buffers cut to MASKED_ROWS."""
    if kind == "FP8_MQA_LOGITS":  # q, KV, its scales, weights, ks/ke; logits are (m, m + 256) FP32, aligned
        return max_m * (n * k + k + 4 + n * 4 + 8) + max_m * (max_m + 512) * 4
    if kind == "FP8_PAGED_MQA_LOGITS":  # q, weights, context lens, block table; logits of 256 columns a row
        return max_m * groups * (n * k + n * 4 + 4 + 256 * 4) + max_m * 16 + 4 * 64 * (k + 4)
    rows = min(max_m, MASKED_ROWS) if kind.endswith("_MASKED") else max_m
    if kind.startswith("GROUPED_GEMM_NT_BF16"):
        lhs = (groups if kind.endswith("_MASKED") else 1) * rows * k * 2
        out = (groups if kind.endswith("_MASKED") else 1) * rows * n * 2
        return lhs + groups * n * k * 2 + out + (max_m * 4 if kind.endswith("_CONTIG") else groups * 4)
    if kind == "GEMM_NT_BF16BF16F32":
        return max_m * k * 2 + n * k * 2 + max_m * n * 4
    block = 32 if kind == "GEMM_NT_F8F8BF16_BLOCK32" else BLOCK
    sf_k = ceil_div(k, block) * 4
    rhs_scales = ceil_div(n, block) * sf_k
    lhs_groups = groups if kind.endswith("_MASKED") else 1
    workspace = lhs_groups * ceil_div(rows, 4) * 4 * sf_k
    if kind.endswith("_MASKED"):
        return groups * (rows * (k + sf_k + 2 * n) + n * k + rhs_scales + 4) + workspace
    weights = (1 if kind.startswith("GEMM_NT") else groups) * (n * k + rhs_scales)
    extra = max_m * 4 if kind.endswith("_CONTIG") else 0
    return max_m * (k + sf_k + 2 * n) + weights + extra + workspace


def worker_bytes(kind: str, n: int, k: int, groups: int, max_m: int) -> int:
    return CONTEXT_BYTES + buffer_bytes(kind, n, k, groups, max_m)


def reduce_to_fit(kind: str, n: int, k: int, groups: int, m_values: tuple[int, ...], budget: int):
    """sglang's rule when a sweep does not fit: halve max_m (not below 2048) and drop larger M.

    Returns (m_values, reduced_max_m or None); m_values is empty if even the floor does not fit.
    """
    max_m = max(m_values)
    if worker_bytes(kind, n, k, groups, max_m) <= budget:
        return m_values, None
    while worker_bytes(kind, n, k, groups, max_m) > budget and max_m > REDUCE_FLOOR:
        max_m //= 2
    if worker_bytes(kind, n, k, groups, max_m) > budget:
        return (), max_m
    return tuple(m for m in m_values if m <= max_m), max_m
