"""Resolve DeepGEMM's cache root the way the SGLang server will.

sglang overwrites DG_JIT_CACHE_DIR with SGLANG_DG_CACHE_DIR (or its own default)
before deep_gemm loads, so a warm into any other directory would be wasted.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheRoot:
    path: Path
    source: str

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


def resolve(environ=None) -> CacheRoot:
    env = os.environ if environ is None else environ
    if env.get("SGLANG_DG_CACHE_DIR"):
        return CacheRoot(_expand(env["SGLANG_DG_CACHE_DIR"], env), "SGLANG_DG_CACHE_DIR")
    sglang_default = _sglang_default(env)
    if sglang_default is not None:
        path, how = sglang_default
        note = "; DG_JIT_CACHE_DIR is ignored because sglang overrides it" if env.get("DG_JIT_CACHE_DIR") else ""
        return CacheRoot(path, f"sglang default, {how}{note}")
    if env.get("DG_JIT_CACHE_DIR"):
        # deep_jit accepts WRITABLE:READONLY...; kernels land in the first.
        first = env["DG_JIT_CACHE_DIR"].split(":", 1)[0]
        return CacheRoot(_expand(first, env), "DG_JIT_CACHE_DIR; sglang not installed")
    return CacheRoot(_expand("~/.cache/deep_gemm", env), "sglang CI default; sglang not installed")


def _expand(path: str, env) -> Path:
    home = env.get("HOME")
    if path.startswith("~") and home:
        path = home + path[1:]
    return Path(os.path.expanduser(path)).absolute()


def _sglang_default(env) -> tuple[Path, str] | None:
    """Read sglang's environ.py as text: importing sglang would pull in torch."""
    try:
        spec = importlib.util.find_spec("sglang")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    environ_py = Path(list(spec.submodule_search_locations)[0]) / "srt" / "environ.py"
    try:
        text = environ_py.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if re.search(r"SGLANG_DG_CACHE_DIR\s*=\s*EnvStr\(\s*lambda[^\n]*_default_cache_subdir\(\s*[\"']deep_gemm", text):
        base = env.get("SGLANG_CACHE_DIR") or "~/.cache/sglang"
        return _expand(base, env) / "deep_gemm", "$SGLANG_CACHE_DIR/deep_gemm"
    return _expand("~/.cache/deep_gemm", env), "~/.cache/deep_gemm"
