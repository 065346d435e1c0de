"""Answers of this host's slow tools, kept until what they depend on changes.

Every `doit warm` and `doit list` needs nvcc's version, the GPU's name, arch, SM count and
memory. Asking costs `nvcc --version`, two nvidia-smi runs and a child that starts the CUDA
driver: tenths of a second on a GPU host, paid by every no-op. Each answer is kept here
with a key of what would change it, and used only while that key still matches:

- a tool's answer: the tool's resolved path and its inode, size, mtime and ctime;
- the GPU's: nvidia-smi's key as a tool, the boot, the driver's version text, the GPU
  device nodes a container was given (/dev/nvidia<N>, /dev/nvidia-caps for MIG) and the
  CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES the answer was asked under.

The files live per host (never in a cache root, which hosts may share):
JITWARM_HOST_CACHE, else $XDG_CACHE_HOME/jitwarm, else ~/.cache/jitwarm;
JITWARM_HOST_CACHE=off asks every time. A file that cannot be read or written is a miss.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

ENV = "JITWARM_HOST_CACHE"
_GPU_NODE = re.compile(r"nvidia\d+")


def directory(env) -> Path | None:
    chosen = env.get(ENV)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    base = env.get("XDG_CACHE_HOME") or (str(Path(env["HOME"]) / ".cache") if env.get("HOME") else None)
    return Path(base) / "jitwarm" if base else None


def tool_key(path: str) -> list | None:
    """What identifies a tool's binary; None when it is not there."""
    try:
        resolved = os.path.realpath(path)
        st = os.stat(resolved)
    except (OSError, ValueError):
        return None
    return [resolved, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def gpu_key(env) -> list | None:
    """What the GPU answers depend on; None when they cannot be kept (no nvidia-smi, no boot id)."""
    smi = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    boot = _text("/proc/sys/kernel/random/boot_id")
    if smi is None or boot is None:
        return None
    nodes = _listing("/dev", _GPU_NODE) + [f"caps/{n}" for n in _listing("/dev/nvidia-caps")]
    return [tool_key(smi), boot, _text("/proc/driver/nvidia/version"), nodes,
            env.get("CUDA_VISIBLE_DEVICES"), env.get("NVIDIA_VISIBLE_DEVICES")]


def get(kind: str, key: list | None, env):
    """The answer kept for `kind` under `key`, or None."""
    where = directory(env)
    if key is None or where is None:
        return None
    try:
        kept = json.loads((where / f"{kind}.json").read_text())
    except (OSError, ValueError):
        return None
    return kept.get("value") if isinstance(kept, dict) and kept.get("key") == key else None


def put(kind: str, key: list | None, value, env) -> None:
    """Keep `value` for `kind` under `key` (written whole by rename; a failure is a miss later)."""
    where = directory(env)
    if key is None or where is None or value is None:
        return
    with contextlib.suppress(OSError):  # a read-only home: asked again next time
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{kind}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"key": key, "value": value}))
        os.replace(tmp, where / f"{kind}.json")


def _text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _listing(path: str, pattern: re.Pattern | None = None) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if pattern is None or pattern.fullmatch(n))
