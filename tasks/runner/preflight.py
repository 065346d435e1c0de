"""Whether a warm can run on this machine at all: one line saying why not, before any work."""

from __future__ import annotations

import importlib.util
import os
import sys


def problem(fp: dict) -> str | None:
    """One line saying why no warm can run here, or None."""
    module = fp["deep_gemm.module"]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"{module} is not installed for {sys.executable} (pip install sgl-deep-gemm on a GPU host)"
    named = next((f"{v}={os.environ[v]}" for v in ("DG_JIT_NVCC_COMPILER", "DJ_JIT_NVCC_COMPILER")
                  if os.environ.get(v)), None)
    if named and fp.get("nvcc") is None:
        # Before the pool starts: else every worker's first compile fails with its own traceback.
        return f"{named} does not run as nvcc (`--version` failed or printed no release)"
    if module != "deep_gemm":
        return None  # a test stand-in needs no GPU
    if fp.get("gpu.arch") is None:
        return "no NVIDIA GPU visible (nvidia-smi reported none)"
    if fp.get("deep_gemm.layout") == "0.2.x":  # DeepJIT: nvcc only, at least 12.9 (backend.hpp)
        release = tuple(int(part) for part in (fp.get("nvcc") or "0.0").split(".")[:2])
        if fp.get("nvcc") is None:
            return "nvcc not found (set CUDA_HOME or DG_JIT_NVCC_COMPILER); sgl-deep-gemm 0.2.x has no NVRTC"
        if release < (12, 9):
            return f"nvcc {fp['nvcc']} is too old: sgl-deep-gemm 0.2.x needs nvcc 12.9 or newer"
    elif fp.get("nvcc") is None and os.environ.get("SGL_DG_USE_NVRTC", "0") == "0":
        return "nvcc not found (set CUDA_HOME or DG_JIT_NVCC_COMPILER)"
    return None
