"""Installed packages, read from metadata and the file tree, never imported (torch-free)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

DEEP_GEMM_DISTS = ("sgl-deep-gemm", "deep-gemm")


def dist_version(name: str) -> str | None:
    import importlib.metadata as metadata  # ~12 ms; the pool's processes import this module and never ask

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve() if spec.origin else None


def deep_gemm_dist() -> str | None:
    return next((name for name in DEEP_GEMM_DISTS if dist_version(name)), None)


def versions() -> dict:
    """sglang and deep_gemm versions from package metadata alone (cheap, for planning)."""
    dist = deep_gemm_dist()
    return {"sglang": dist_version("sglang"), "deep_gemm": f"{dist} {dist_version(dist)}" if dist else None}


def deep_gemm_layout_id(module: str) -> str:
    """"0.2.x" when the installed deep_gemm bundles DeepJIT, else "0.1.x".

    The `include/deep_jit/` tree decides; without it (a stand-in, a trimmed install)
    the release number does, for the real module only."""
    where = package_dir(module)
    if where is not None and (where / "include" / "deep_jit").is_dir():
        return "0.2.x"
    dist = deep_gemm_dist() if module == "deep_gemm" else None
    version = dist_version(dist) if dist else None
    if version and tuple(int(p) for p in re.findall(r"\d+", version)[:2]) >= (0, 2):
        return "0.2.x"
    return "0.1.x"
