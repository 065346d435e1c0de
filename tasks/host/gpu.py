"""GPU memory as nvidia-smi reports it (no torch), the margin the workers leave free, and
the GPU a host without one may declare (JITWARM_GPU) to pull proven kernels for it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import msgspec

from tasks.host import hostcache

GIB = 1 << 30
DECLARED_ENV = "JITWARM_GPU"


class DeclaredGpu(msgspec.Struct, frozen=True):
    """What DeepGEMM keys kernels on (arch, SM count), plus what planning reads (memory)."""

    spec: str
    arch: str  # as nvidia-smi's compute_cap prints it, e.g. "9.0"
    sms: str
    name: str | None = None
    memory_mib: int | None = None


# nvidia-smi's name, compute_cap and memory.total, and the driver's SM count, as these GPUs report them.
PRESETS = {
    "H100": DeclaredGpu("H100", "9.0", "132", "NVIDIA H100 80GB HBM3", 81559),
    "H200": DeclaredGpu("H200", "9.0", "132", "NVIDIA H200", 143771),
}


class DeclaredGpuError(ValueError):
    """A JITWARM_GPU value that names no GPU; the message is one line."""


def declared(environ=None) -> DeclaredGpu | None:
    """The GPU JITWARM_GPU declares: a preset (H100, H200) or smXY:SMS such as sm90:132."""
    env = os.environ if environ is None else environ
    value = (env.get(DECLARED_ENV) or "").strip()
    if not value:
        return None
    if value.upper() in PRESETS:
        return PRESETS[value.upper()]
    match = re.fullmatch(r"sm_?(\d+)(\d):(\d+)", value, re.IGNORECASE)
    if not match or int(match.group(3)) < 1:
        raise DeclaredGpuError(f"{DECLARED_ENV}: expected {', '.join(PRESETS)} or smXY:SMS (e.g. sm90:132), "
                               f"got {value!r}")
    return DeclaredGpu(value, f"{int(match.group(1))}.{match.group(2)}", match.group(3))


def margin_bytes(environ=None) -> int:
    env = os.environ if environ is None else environ
    return int(float(env.get("JITWARM_GPU_MARGIN_GIB", "4")) * GIB)


class Device(msgspec.Struct, frozen=True):
    id: str  # as CUDA_VISIBLE_DEVICES names it: what a child that should use only this GPU is given
    free_bytes: int


def devices(environ=None) -> list[Device]:
    """Every visible GPU with its free memory, in CUDA_VISIBLE_DEVICES' order (all of
    nvidia-smi's when it is unset); [] when nvidia-smi cannot say. One nvidia-smi call."""
    env = os.environ if environ is None else environ
    try:
        found = [(index, uuid, int(float(free)) * (1 << 20))
                 for index, uuid, free in _smi(env, "index,uuid,memory.free") or []]
    except ValueError:
        return []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [Device(index, free) for index, _, free in found]
    picked = []
    for item in (part.strip() for part in visible.split(",")):
        match = next((free for index, uuid, free in found if item and (item == index or uuid.startswith(item))), None)
        if match is None:
            break  # CUDA ignores the list from its first entry that names no GPU
        picked.append(Device(item, match))
    return picked


def total_mib(environ=None) -> int | None:
    """Memory of the first visible GPU in MiB (what sglang sizes its defaults by), else the
    declared GPU's (a preset's), or None."""
    env = os.environ if environ is None else environ
    key = hostcache.gpu_key(env)
    found = hostcache.get("memory_total_mib", key, env)
    if found is None:
        found = _query("memory.total", env)
        hostcache.put("memory_total_mib", key, found, env)
    if found is None:
        with_memory = _declared_quietly(environ)
        return with_memory.memory_mib if with_memory else None
    return found


def _declared_quietly(environ) -> DeclaredGpu | None:
    try:
        return declared(environ)
    except DeclaredGpuError:
        return None  # the session reports a bad value, once


def _query(field: str, environ=None) -> int | None:
    """One field of the first visible GPU."""
    env = os.environ if environ is None else environ
    first = (env.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    rows = _smi(env, field, *([f"--id={first}"] if first.isdigit() else []))
    try:
        return int(float(rows[0][0])) if rows else None
    except ValueError:
        return None


def _smi(env, fields: str, *extra: str) -> list[list[str]] | None:
    """nvidia-smi's CSV answer to --query-gpu=`fields`, one list per GPU; None when it cannot say."""
    program = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if program is None:
        return None
    argv = [program, f"--query-gpu={fields}", "--format=csv,noheader,nounits", *extra]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True, env=dict(env)).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[part.strip() for part in line.split(",")] for line in out.splitlines() if line.strip()]
