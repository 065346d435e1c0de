"""GPU memory for the warm's workers: what is free, and what each worker will need.

No torch here: free memory comes from nvidia-smi (behind a timeout), sizes from
executors.buffer_bytes (sglang's formulas). Workers share one GPU, so their buffers
plus a per-process CUDA context must fit in free memory minus a margin.
"""

from __future__ import annotations

import os
import subprocess

from tasks.build.child import executors

GIB = 1 << 30
# A CUDA context with torch and deep_gemm loaded, plus allocator slack (seen ~0.5 GiB on H100).
CONTEXT_BYTES = 1 * GIB
REDUCE_FLOOR = 4096  # sglang stops halving max_m here


def margin_bytes(environ=None) -> int:
    env = os.environ if environ is None else environ
    return int(float(env.get("JITWARM_GPU_MARGIN_GIB", "4")) * GIB)


def free_bytes(environ=None) -> int | None:
    """Free memory of the first visible GPU, or None when it cannot be read."""
    env = os.environ if environ is None else environ
    argv = ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
    first = (env.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    if first.isdigit():
        argv.append(f"--id={first}")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
        return int(float(out.splitlines()[0])) * (1 << 20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def worker_bytes(kind: str, n: int, k: int, groups: int, max_m: int) -> int:
    return CONTEXT_BYTES + executors.buffer_bytes(kind, n, k, groups, max_m)


def reduce_to_fit(kind: str, n: int, k: int, groups: int, m_values: tuple[int, ...], budget: int):
    """sglang's rule when a sweep does not fit: halve max_m (not below 4096) and drop larger M.

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
