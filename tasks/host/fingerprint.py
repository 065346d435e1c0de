"""Toolchain fingerprint: what, if changed, may change or invalidate compiled kernels.

Cheap and torch-free: versions come from package metadata and file text, never imports;
nvcc and nvidia-smi run concurrently behind timeouts, and only when this host has no
answer kept for the same binaries and GPUs (tasks/host/hostcache.py). Missing pieces are recorded as
None ("absent"), never raised. What the cache layout keys on (tasks/state/layouts.py) is
passed in: this layer reads the machine, it does not know cache formats.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.host import gpu as gpu_info
from tasks.host import hostcache, packages

# Env vars that change sglang's warmup; each layout adds those that change its kernels.
SGLANG_ENV = ("SGLANG_JIT_DEEPGEMM_FAST_WARMUP", "SGLANG_JIT_DEEPGEMM_PRECOMPILE", "SGLANG_ENABLE_JIT_DEEPGEMM")
# Recorded, but no reason to rebuild: DeepGEMM keys kernels on the arch and SM count, not the
# marketing name; and a declared GPU (JITWARM_GPU) stands for the same arch and SMs.
_NOT_COMPARED = ("gpu.name", "gpu.declared")
# Test seam: tests point this at a stand-in module; production leaves it unset.
MODULE_ENV = "JITWARM_DEEP_GEMM_MODULE"
_TIMEOUT_S = 10


def deep_gemm_module(environ=None) -> str:
    env = os.environ if environ is None else environ
    return env.get(MODULE_ENV) or "deep_gemm"


def kernel_env(layout) -> tuple[str, ...]:
    return (*layout.kernel_env, *SGLANG_ENV)


def compute(layout, environ=None) -> dict:
    """The fingerprint under `layout` (a tasks.state.layouts.CacheLayout)."""
    env = os.environ if environ is None else environ
    module = deep_gemm_module(env)
    # Kept answers first (tasks/host/hostcache.py); what is not kept is asked, in parallel.
    nvcc_key, gpu_key = hostcache.tool_key(nvcc_path(env, layout)), hostcache.gpu_key(env)
    kept_nvcc, kept_gpu = hostcache.get("nvcc", nvcc_key, env), hostcache.get("gpu", gpu_key, env)
    nvcc = _Child(None, 0) if kept_nvcc is not None else _start([nvcc_path(env, layout), "--version"], env)
    smi = _Child(None, 0) if kept_gpu is not None else _start(_smi_argv(env), env)
    # The SM count needs the driver; ask now, in parallel, wherever nvidia-smi exists.
    probe = _start([sys.executable, "-m", "tasks.host.gpu_probe"], env, timeout=20) if smi.proc else _Child(None, 0)
    fp: dict[str, str | None] = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "torch": _dist_version("torch"),
        "torch.cuda": _torch_cuda(),
        "triton": _dist_version("triton"),
        "cuda_runtime": _first_version("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13",
                                       "nvidia-cuda-runtime-cu12"),
        "sglang": _dist_version("sglang"),
    }
    fp.update(_deep_gemm(module, layout))
    version_text = kept_nvcc
    if version_text is None:
        version_text = _finish(nvcc)
        hostcache.put("nvcc", nvcc_key, version_text, env)
    fp["nvcc"] = _nvcc_release(version_text)
    if not layout.keys_install_path:
        # DeepJIT hashes the whole `nvcc --version` text into every entry's key.
        fp["nvcc.version_sha256"] = hashlib.sha256(version_text.encode()).hexdigest()[:16] if version_text else None
    if kept_gpu is None:
        kept_gpu = {"smi": _finish(smi), "probe": _finish(probe)}
        if kept_gpu["smi"] is not None and kept_gpu["probe"] is not None:  # a GPU that answered in full
            hostcache.put("gpu", gpu_key, kept_gpu, env)
    fp.update(_gpu(kept_gpu.get("smi"), kept_gpu.get("probe")))
    if fp["gpu.arch"] is None:
        with contextlib.suppress(gpu_info.DeclaredGpuError):  # the session reports a bad value
            if declared := gpu_info.declared(env):
                # No GPU here: kernels are pulled for the one declared (a CPU image build stage).
                fp.update({"gpu.name": declared.name, "gpu.arch": declared.arch, "gpu.sms": declared.sms,
                           "gpu.declared": declared.spec})
    for name in kernel_env(layout):
        fp[f"env.{name}"] = env.get(name)
    return fp


def nvcc_version_text(layout, environ=None) -> str | None:
    """The `nvcc --version` text deep_gemm reads (kept by compute(), else asked): both layouts key kernels on it."""
    env = os.environ if environ is None else environ
    path = nvcc_path(env, layout)
    text = hostcache.get("nvcc", hostcache.tool_key(path), env)
    return text if text is not None else _finish(_start([path, "--version"], env))


def diff(old: dict, new: dict) -> list[str]:
    """Human lines for each changed component, e.g. `torch 2.11.0 -> 2.14.1`."""
    lines = []
    for key in sorted((set(old) | set(new)) - set(_NOT_COMPARED)):
        before, after = old.get(key), new.get(key)
        if before != after:
            lines.append(f"{key} {_show(before)} -> {_show(after)}")
    return lines


def _show(value) -> str:
    return "absent" if value is None else str(value)


_dist_version = packages.dist_version


def _first_version(*names: str) -> str | None:
    return next((v for v in map(_dist_version, names) if v), None)


def _torch_cuda() -> str | None:
    """torch.version.cuda, read from torch/version.py without importing torch."""
    where = packages.package_dir("torch")
    try:
        text = (where / "version.py").read_text() if where else ""
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::\s*[^=]+)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def _deep_gemm(module: str, layout) -> dict:
    dist = packages.deep_gemm_dist() if module == "deep_gemm" else None
    found = {
        "deep_gemm.module": module,
        "deep_gemm.dist": dist,
        "deep_gemm.version": _dist_version(dist) if dist else None,
        "deep_gemm.layout": layout.id,
    }
    if layout.keys_install_path:  # 0.1.x: the absolute include path enters DeepGEMM's own key
        path = packages.package_dir(module)
        found["deep_gemm.path"] = str(path) if path else None
    return found


def nvcc_path(env, layout) -> str:
    """Where deep_gemm finds nvcc: DG_JIT_NVCC_COMPILER (0.2.x: or DJ_), else $CUDA_HOME/bin/nvcc."""
    for name in layout.nvcc_env:
        if env.get(name):
            return env[name]
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if not home:
        found = shutil.which("nvcc", path=env.get("PATH"))
        home = str(Path(found).resolve().parent.parent) if found else "/usr/local/cuda"
    return str(Path(home) / "bin" / "nvcc")


def _nvcc_release(output: str | None) -> str | None:
    match = re.search(r"release (\d+\.\d+), V([\d.]+)", output or "")
    return match.group(2) if match else None


def _smi_argv(env) -> list[str]:
    argv = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    first = (env.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    if first.isdigit():
        argv.append(f"--id={first}")
    return argv


def _gpu(output: str | None, probe: str | None) -> dict:
    """nvidia-smi gives name and arch; it cannot report SMs, so the driver probe does."""
    fields = [part.strip() for part in (output or "").splitlines()[0].split(",")] if output else []
    gpu = {"gpu.name": None, "gpu.arch": None, "gpu.sms": None}
    if len(fields) >= 2:
        gpu["gpu.name"], gpu["gpu.arch"] = fields[0], fields[1]
        with contextlib.suppress(ValueError, KeyError, TypeError):
            gpu["gpu.sms"] = str(json.loads(probe or "{}")["sms"])
    return gpu


class _Child:
    def __init__(self, proc: subprocess.Popen | None, timeout: float):
        self.proc, self.timeout = proc, timeout


def _start(argv: list[str], env, timeout: float = _TIMEOUT_S) -> _Child:
    program = shutil.which(argv[0], path=env.get("PATH", os.defpath)) if os.sep not in argv[0] else argv[0]
    if program is None:
        return _Child(None, timeout)
    try:
        proc = subprocess.Popen([program, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True,
                                env={**env, "PYTHONPATH": _pythonpath(env)})
    except OSError:
        proc = None
    return _Child(proc, timeout)


def _finish(child: _Child) -> str | None:
    if child.proc is None:
        return None
    try:
        out, _ = child.proc.communicate(timeout=child.timeout)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.communicate()
        return None
    return out if child.proc.returncode == 0 else None


def _pythonpath(env) -> str:
    root = str(Path(__file__).resolve().parents[2])
    existing = env.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


# What DeepGEMM hashes into an entry's name: its code (and for 0.1.x its include path),
# the compiler, the arch and SM count, and the env that picks or tunes the compiler
# (0.1.x's jit/compiler.py; DeepJIT's runtime headers in 0.2.x). The fingerprint holds only the parts its layout keys on.
_PARTS = ("deep_gemm.module", "deep_gemm.dist", "deep_gemm.version", "deep_gemm.layout", "deep_gemm.path",
          "nvcc", "nvcc.version_sha256", "gpu.arch", "gpu.sms")


def key_parts(fp: dict) -> dict:
    """The fingerprint's parts that enter DeepGEMM's own cache key: where they differ, every kernel is keyed anew."""
    env = {name: value for name, value in fp.items()
           if name.startswith(("env.DG_JIT_", "env.DJ_JIT_")) or name.endswith("DG_USE_NVRTC")}
    return {**{name: fp[name] for name in _PARTS if name in fp}, **env}
