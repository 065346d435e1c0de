"""DeepGEMM's on-disk cache layouts: how entries are named, when one is complete, and
what its cache key covers. One class per layout; everything that touches entries asks it.

  0.1.x  sgl-deep-gemm 0.1.x: `<root>/cache/kernel.<name>.<hash>/` with kernel.cu and a
         binary (kernel.cubin; older: kernel.so); one root, DG_JIT_CACHE_DIR taken literally.
  0.2.x  sgl-deep-gemm 0.2.x, DeepJIT (include/deep_jit/cache/disk.hpp): `<root>/cache/
         <tag>.<digest>/` with kernel.cu, kernel.cubin, meta.json and `.committed`; the
         entry exists for DeepJIT only once `.committed` does. DG_JIT_CACHE_DIR (else
         DJ_JIT_CACHE_DIR, else $HOME/.dj) is `WRITABLE:READONLY...`, searched in order.

The layout is read from the installed deep_gemm without importing it (planning stays
torch-free); JITWARM_CACHE_LAYOUT overrides it (test stand-ins name theirs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Protocol

from tasks.host import packages
from tasks.state import kernel_keys

OVERRIDE_ENV = "JITWARM_CACHE_LAYOUT"


class LayoutError(ValueError):
    """A setting the layout cannot accept; the message is one line naming it."""


class CacheLayout(Protocol):
    id: str  # "0.1.x" or "0.2.x": what markers, plans and the override name
    title: str  # for `doit info`
    multi_root: bool  # whether the cache-dir variable is a WRITABLE:READONLY... list
    keys_install_path: bool  # whether the install path enters the kernels' cache key
    kernel_env: tuple[str, ...]  # env vars that change its compiled kernels
    nvcc_env: tuple[str, ...]  # env vars naming nvcc, first wins
    cache_dir_env: tuple[str, ...]  # env vars naming the roots without sglang, first wins

    def is_entry(self, name: str) -> bool: ...

    def family(self, name: str) -> str:
        """The kernel family an entry's name carries (e.g. sm90_fp8_gemm_1d2d)."""

    def present(self, entry: Path) -> bool:
        """Whether the loader takes this directory as the entry (complete or not)."""

    def describe(self, entry: Path) -> dict | None:
        """{"binary": file, "size": bytes} for a complete entry, None otherwise."""

    def flaw(self, entry: Path) -> str:
        """What an incomplete entry lacks, in a few words."""

    def roots(self, value: str) -> list[str]:
        """The cache-dir variable's value as roots, writable first; LayoutError if refused."""

    def build_leftovers(self, root: Path, pids: list[int]) -> list[Path]:
        """Build directories the given processes may have left in `root`."""

    def assemble(self, entry: Path, source: Path, cubin: Path, command: str) -> None:
        """Write a complete entry into the new directory `entry` from a kernel's source and the
        cubin nvcc built from it, as the layout's own build leaves one (before its rename)."""

    def entry_name(self, family: str, source: str, argv: list[str], toolchain: kernel_keys.Toolchain) -> str:
        """The entry a recipe (source, nvcc argv) builds under `toolchain`, named as this layout
        keys it (tasks/state/kernel_keys.py); kernel_keys.KeyUnknown if it cannot tell."""


class Legacy:
    """sgl-deep-gemm 0.1.x."""

    id = "0.1.x"
    title = "sgl-deep-gemm 0.1.x (cache/kernel.<name>.<hash>/)"
    SOURCE = "kernel.cu"
    BINARIES = ("kernel.cubin", "kernel.so")
    FILES = (SOURCE, *BINARIES)  # all an entry holds (a remote artifact may carry no other)
    multi_root = False
    keys_install_path = True  # some 0.1.x builds hash the absolute include path (0.1.x's jit/compiler.py)
    # Env vars that change its compiled kernels (0.1.x's jit/compiler.py); sglang maps *DG_USE_NVRTC onto the first.
    kernel_env = ("DG_JIT_USE_NVRTC", "DG_JIT_NVCC_COMPILER", "DG_JIT_CPP_STANDARD", "DG_JIT_WITH_LINEINFO",
                  "DG_JIT_PTXAS_VERBOSE", "DG_JIT_DEBUG", "SGLANG_DG_USE_NVRTC", "SGL_DG_USE_NVRTC")
    nvcc_env = ("DG_JIT_NVCC_COMPILER",)
    cache_dir_env = ("DG_JIT_CACHE_DIR",)

    def is_entry(self, name: str) -> bool:
        return name.startswith("kernel.")

    def family(self, name: str) -> str:
        return name.split(".")[1] if name.count(".") >= 2 else ""

    def present(self, entry: Path) -> bool:
        return os.path.isdir(entry)

    def describe(self, entry: Path) -> dict | None:
        base = os.fspath(entry)
        if not os.path.isfile(os.path.join(base, self.SOURCE)):
            return None
        for binary in self.BINARIES:
            if (size := _size(os.path.join(base, binary))) > 0:
                return {"binary": binary, "size": size}
        return None

    def flaw(self, entry: Path) -> str:
        if not os.path.isfile(os.path.join(entry, self.SOURCE)):
            return f"{self.SOURCE} missing"
        return f"{' and '.join(self.BINARIES)} missing or empty"

    def roots(self, value: str) -> list[str]:
        return [value]

    def build_leftovers(self, root: Path, pids: list[int]) -> list[Path]:
        # 0.1.x builds in tmp/<pid>-<uuid>/; a deferred or killed call leaves its directory.
        return [path for pid in pids for path in (Path(root) / "tmp").glob(f"{pid}-*")]

    def assemble(self, entry: Path, source: Path, cubin: Path, command: str) -> None:
        entry.mkdir(parents=True)
        shutil.copyfile(source, entry / self.SOURCE)
        shutil.copyfile(cubin, entry / self.BINARIES[0])

    def entry_name(self, family: str, source: str, argv: list[str], toolchain: kernel_keys.Toolchain) -> str:
        return kernel_keys.legacy_entry(family, source, argv, toolchain)

    def __repr__(self) -> str:
        return self.id


class DeepJit:
    """sgl-deep-gemm 0.2.x (DeepJIT), what sglang 0.5.23 pins."""

    id = "0.2.x"
    title = "sgl-deep-gemm 0.2.x DeepJIT (cache/<tag>.<digest>/ with .committed)"
    COMMITTED = ".committed"
    BINARY = "kernel.cubin"
    FILES = ("kernel.cu", BINARY, "meta.json", COMMITTED)  # all an entry holds (DeepJIT's build, runtime/runtime.hpp)
    multi_root = True
    keys_install_path = False  # disk.hpp/options.hpp: include paths are passed, not hashed
    # Every DG_JIT_* is also read as DJ_JIT_* (utils/env.hpp). These change the flags that
    # are hashed (options.hpp) or the compiler whose `--version` text is; NVRTC is gone.
    _KERNEL_SUFFIXES = ("JIT_NVCC_COMPILER", "JIT_CPP_STANDARD", "JIT_WITH_LINEINFO", "JIT_PTXAS_VERBOSE",
                        "JIT_DEBUG", "JIT_CHECK_NO_SPILLS", "JIT_CHECK_NO_LOCAL_MEMORY")
    kernel_env = tuple(f"{prefix}_{suffix}" for suffix in _KERNEL_SUFFIXES for prefix in ("DG", "DJ"))
    nvcc_env = ("DG_JIT_NVCC_COMPILER", "DJ_JIT_NVCC_COMPILER")
    cache_dir_env = ("DG_JIT_CACHE_DIR", "DJ_JIT_CACHE_DIR")
    _NAME = re.compile(r"[A-Za-z0-9_]+\.[0-9a-f]+")

    def is_entry(self, name: str) -> bool:
        return self._NAME.fullmatch(name) is not None

    def family(self, name: str) -> str:
        return name.split(".")[0]

    def present(self, entry: Path) -> bool:
        return os.path.exists(os.path.join(entry, self.COMMITTED))

    def describe(self, entry: Path) -> dict | None:
        if not self.present(entry) or (size := _size(os.path.join(entry, self.BINARY))) <= 0:
            return None
        return {"binary": self.BINARY, "size": size}

    def flaw(self, entry: Path) -> str:
        if not self.present(entry):
            return f"no {self.COMMITTED}"
        return f"{self.BINARY} missing or empty"

    def roots(self, value: str) -> list[str]:
        parts = value.split(":")
        if any(not part for part in parts):
            raise LayoutError(f"empty path in the list {value!r} (DeepJIT refuses it)")
        return parts

    def build_leftovers(self, root: Path, pids: list[int]) -> list[Path]:
        return []  # tmp/<uuid>/: DeepJIT removes its own on failure, and names carry no pid

    def assemble(self, entry: Path, source: Path, cubin: Path, command: str) -> None:
        # meta.json is DeepJIT's record of the build; its loader reads only the cubin (backend/cuda).
        entry.mkdir(parents=True)
        shutil.copyfile(source, entry / "kernel.cu")
        shutil.copyfile(cubin, entry / self.BINARY)
        (entry / "meta.json").write_text(json.dumps({"command": command, "built_by": "jitwarm, from a known recipe"}))
        (entry / self.COMMITTED).write_bytes(b"")  # last: the entry exists once this does

    def entry_name(self, family: str, source: str, argv: list[str], toolchain: kernel_keys.Toolchain) -> str:
        return kernel_keys.deepjit_entry(family, source, argv, toolchain)

    def __repr__(self) -> str:
        return self.id


LAYOUTS: dict[str, CacheLayout] = {layout.id: layout for layout in (Legacy(), DeepJit())}


def by_id(layout_id: str) -> CacheLayout:
    try:
        return LAYOUTS[layout_id]
    except KeyError:
        raise LayoutError(f"{OVERRIDE_ENV}: expected one of {', '.join(LAYOUTS)}, got {layout_id!r}") from None


def detect(module: str, environ=None) -> CacheLayout:
    """The layout of the installed deep_gemm (or the override), without importing it."""
    env = os.environ if environ is None else environ
    return by_id(env.get(OVERRIDE_ENV) or packages.deep_gemm_layout_id(module))


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
