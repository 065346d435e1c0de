"""GPU memory as nvidia-smi reports it (no torch), and the margin the workers leave free."""

from __future__ import annotations

import os
import subprocess

GIB = 1 << 30


def margin_bytes(environ=None) -> int:
    env = os.environ if environ is None else environ
    return int(float(env.get("JITWARM_GPU_MARGIN_GIB", "4")) * GIB)


def free_bytes(environ=None) -> int | None:
    """Free memory of the first visible GPU, or None when it cannot be read."""
    mib = _query("memory.free", environ)
    return mib * (1 << 20) if mib is not None else None


def total_mib(environ=None) -> int | None:
    """Memory of the first visible GPU in MiB (what sglang sizes its defaults by), or None."""
    return _query("memory.total", environ)


def _query(field: str, environ=None) -> int | None:
    env = os.environ if environ is None else environ
    argv = ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"]
    first = (env.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    if first.isdigit():
        argv.append(f"--id={first}")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
        return int(float(out.splitlines()[0]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
