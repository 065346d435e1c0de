"""Resolve DeepGEMM's cache roots the way the SGLang server will.

sglang (srt/environ.py, compile_utils.py) rewrites every legacy SGL_* variable to its
SGLANG_* spelling, then sets DG_JIT_CACHE_DIR to SGLANG_DG_CACHE_DIR (default
$SGLANG_CACHE_DIR/deep_gemm) before deep_gemm loads, so a warm into any other directory
would be wasted. Without sglang, deep_gemm reads its own variables.

For the 0.2.x layout the value is a list, `WRITABLE:READONLY...`: kernels are built into
the first root, and an entry in any root counts. jitwarm's own state (markers, records,
logs) lives in the writable root.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import msgspec

from tasks.state import layouts


class CachePlan(msgspec.Struct, kw_only=True):
    """A CacheRoot as child processes receive it."""

    root: str
    layout: str
    readonly: list[str] = []


class CacheRoot(msgspec.Struct, frozen=True):
    path: Path  # the writable root
    source: str  # where the value came from, for `doit info`
    layout: layouts.CacheLayout
    readonly: tuple[Path, ...] = ()  # searched after `path`, in order, never written

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.path, *self.readonly)

    def env_value(self) -> str:
        """DG_JIT_CACHE_DIR for a process that should see every root, writing into the first."""
        return ":".join(map(str, self.roots))

    def lines(self) -> list[str]:
        """Every root, for `doit info`."""
        return [f"{self.path} (writable; {self.source})"] + [f"{p} (read-only)" for p in self.readonly]

    def as_plan(self) -> CachePlan:
        return CachePlan(root=str(self.path), layout=self.layout.id, readonly=[str(p) for p in self.readonly])

    @classmethod
    def from_plan(cls, plan: CachePlan) -> "CacheRoot":
        return cls(Path(plan.root), "plan", layouts.by_id(plan.layout), tuple(Path(p) for p in plan.readonly))

    def __str__(self) -> str:
        ro = f"; read-only: {', '.join(map(str, self.readonly))}" if self.readonly else ""
        return f"{self.path} ({self.source}){ro}"


def resolve(layout: layouts.CacheLayout, environ=None) -> CacheRoot:
    """Raises layouts.LayoutError (one line, naming the variable) for a list DeepJIT refuses, or a
    writable root that is no directory (a file, /dev/null) or one of whose state folders is unusable."""
    root = _resolve(layout, environ)
    for path in (root.path, root.path / "cache", root.path / "jitwarm", root.path / "tmp"):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise layouts.LayoutError(f"cache root {root.path} ({root.source.split(';')[0]}): {path} is not a directory")
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise layouts.LayoutError(f"cache root {root.path} ({root.source.split(';')[0]}): {path} is not "
                                      "readable and writable by this user")
    return root


def _resolve(layout: layouts.CacheLayout, environ=None) -> CacheRoot:
    env = os.environ if environ is None else environ
    name, value = _sglang_var(env, "DG_CACHE_DIR")
    if value:
        return _root(value, name, layout, env)
    sglang_default = _sglang_default(env)
    if sglang_default is not None:
        path, how = sglang_default
        ignored = [v for v in layout.cache_dir_env if env.get(v)]
        note = f"; {', '.join(ignored)} ignored because sglang overrides it" if ignored else ""
        return CacheRoot(path, f"sglang default, {how}{note}", layout)
    for name in layout.cache_dir_env:
        if env.get(name):
            return _root(env[name], f"{name}; sglang not installed", layout, env)
    if layout.multi_root:
        # The sglang release that pins 0.2.x keeps it under its own cache dir.
        return CacheRoot(_sglang_cache_dir(env) / "deep_gemm",
                         "sglang 0.5.23's default, $SGLANG_CACHE_DIR/deep_gemm; sglang not installed", layout)
    return CacheRoot(_expand("~/.cache/deep_gemm", env), "sglang CI default; sglang not installed", layout)


def _root(value: str, source: str, layout, env) -> CacheRoot:
    try:
        paths = [_expand(part, env) for part in layout.roots(value)]
    except layouts.LayoutError as exc:
        raise layouts.LayoutError(f"{source.split(';')[0]}: {exc}") from None
    return CacheRoot(paths[0], source, layout, tuple(paths[1:]))


def _sglang_var(env, suffix: str) -> tuple[str, str | None]:
    """sglang copies SGL_<X> over SGLANG_<X> at import, so the legacy spelling wins."""
    for name in (f"SGL_{suffix}", f"SGLANG_{suffix}"):
        if env.get(name):
            return name, env[name]
    return f"SGLANG_{suffix}", None


def _sglang_cache_dir(env) -> Path:
    _, base = _sglang_var(env, "CACHE_DIR")
    return _expand(base or "~/.cache/sglang", env)


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
        return _sglang_cache_dir(env) / "deep_gemm", "$SGLANG_CACHE_DIR/deep_gemm"
    return _expand("~/.cache/deep_gemm", env), "~/.cache/deep_gemm"
