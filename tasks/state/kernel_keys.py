"""DeepGEMM's own cache keys, computed without deep_gemm: what lets a known kernel source be
compiled under another toolchain straight into the entry the new one will look up.

0.1.x  sgl-deep-gemm 0.1.2 (`Compiler::build`, csrc/jit/compiler.hpp; utils/hash.hpp):
       `kernel.<name>.<digest>`, the digest of `<name>$$NVCC<major>.<minor>$$<flags>$$<kernel.cu>`;
       flags are nvcc's arguments after the output path, deep_gemm's include dir among them.
       Checked against 15 entries 0.1.2 built on an H200 (tests/data/kernels/0.1.x).
0.2.x  DeepJIT (runtime/runtime.hpp, utils/hash.hpp, utils/parser.hpp, backend/cuda/options.hpp
       in the 0.2.3.post2 wheel): `<tag>.<digest>`, a two-lane FNV-1a whose every update is
       prefixed by its length, over the config's extra signature, the digest of the whole
       `nvcc --version` text, the option flags joined by spaces, the post hook's digest ("" when
       none) and the source's digest, into which the digest of each tracked include is folded
       (recursively; an include is tracked when its name starts with one of the config's prefixes).
"""

from __future__ import annotations

import re
from pathlib import Path

_MASK = (1 << 64) - 1
_FNV_PRIME = 0x100000001B3


def _split_mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def legacy_digest(data: bytes) -> str:
    """0.1.x's get_hex_digest: two FNV-1a lanes (different seeds), each split-mixed."""
    lanes = []
    for seed in (0xC6A4A7935BD1E995, 0x9E3779B97F4A7C15):
        h = seed
        for byte in data:
            h = ((h ^ byte) * _FNV_PRIME) & _MASK
        lanes.append(f"{_split_mix(h):016x}")
    return "".join(lanes)


def release(version_text: str) -> str | None:
    """`release 13.0` in `nvcc --version`: what deep_gemm's checks and 0.1.x's key read of it."""
    found = re.search(r"release (\d+\.\d+)", version_text or "")
    return found.group(1) if found else None


def legacy_name(family: str, nvcc_release: str, flags: str, code: str) -> str:
    signature = f"{family}$$NVCC{nvcc_release}$${flags}$${code}"
    return f"kernel.{family}.{legacy_digest(signature.encode())}"


class Fnv1a:
    """DeepJIT's hash::FNV1a (utils/hash.hpp)."""

    def __init__(self):
        self.a, self.b = 0xC6A4A7935BD1E995, 0xFF51AFD7ED558CCD

    def update(self, data: str | bytes) -> Fnv1a:
        raw = data.encode() if isinstance(data, str) else data
        a, b = self.a, self.b
        for byte in len(raw).to_bytes(8, "little") + raw:
            a = ((a ^ byte) * _FNV_PRIME) & _MASK
            b = ((b ^ byte) * 0x9E3779B97F4A7C15) & _MASK
        self.a, self.b = a, b
        return self

    def hexdigest(self) -> str:
        return f"{_split_mix(self.a):016x}{_split_mix(self.b):016x}"


class KeyUnknown(ValueError):
    """A source DeepJIT would refuse or cannot be hashed here (an include not found)."""


class IncludeHasher:
    """DeepJIT's Parser: a source's digest with its tracked includes' digests folded in."""

    def __init__(self, include_dirs: list[str], prefixes: list[str]):
        self.dirs, self.prefixes = [Path(d) for d in include_dirs], list(prefixes)
        self.memo: dict[str, str] = {}

    def source(self, code: str) -> str:
        return self._digest(code, set())

    def _digest(self, code: str, visiting: set[str]) -> str:
        fnv = Fnv1a().update(code.encode("utf-8", "surrogateescape"))
        for line in code.split("\n"):
            if name := self._tracked(line):
                fnv.update(self._include(name, visiting))
        return fnv.hexdigest()

    def _tracked(self, line: str) -> str | None:
        line = line.lstrip(" \t\f\v")
        if not line.startswith("#"):
            return None
        line = line[1:].lstrip(" \t\f\v")
        if not line.startswith("include"):
            return None
        line = line[len("include"):].lstrip(" \t\f\v")
        if not line or line[0] not in "<\"":
            return None
        closing = next((i for i in range(1, len(line)) if line[i] in ">\""), -1)
        if closing < 0:
            return None
        name = line[1:closing]
        if line[0] != "<" or line[closing] != ">" or not name or name[0] in " \t\f\v" or name[-1] in " \t\f\v":
            raise KeyUnknown(f"non-standard include: {line[:closing + 1]}")
        return name if any(name.startswith(p) for p in self.prefixes) else None

    def _include(self, name: str, visiting: set[str]) -> str:
        if name in self.memo:
            return self.memo[name]
        if name in visiting:
            raise KeyUnknown(f"circular include may occur: {name}")
        path = next((d / name for d in self.dirs if (d / name).exists()), None)
        if path is None:
            raise KeyUnknown(f"include {name} not found in {', '.join(map(str, self.dirs))}")
        self.memo[name] = self._digest(path.read_bytes().decode("utf-8", "surrogateescape"), visiting | {name})
        return self.memo[name]


def deepjit_name(tag: str, extra_signature: str, version_text: str, flags: list[str], source_digest: str,
                 post_hook_digest: str = "") -> str:
    fnv = Fnv1a().update(extra_signature).update(Fnv1a().update(version_text).hexdigest())
    digest = fnv.update(" ".join(flags)).update(post_hook_digest).update(source_digest).hexdigest()
    return f"{tag}.{digest}"


class Toolchain:
    """What a layout's key takes from the host beside a kernel's source and nvcc flags: the
    `nvcc --version` text deep_gemm reads and, for 0.2.x, DeepJIT's config (its extra signature
    and include prefixes, as a DeepJIT-built entry's meta.json records them)."""

    def __init__(self, nvcc_version: str, deepjit: dict | None = None):
        self.nvcc_version, self.deepjit = nvcc_version, deepjit
        self._hashers: dict[tuple, IncludeHasher] = {}  # each header hashed once a run

    def hasher(self, include_dirs: list[str]) -> IncludeHasher:
        prefixes = list((self.deepjit or {}).get("include_prefixes") or [])
        key = (tuple(include_dirs), tuple(prefixes))
        if key not in self._hashers:
            self._hashers[key] = IncludeHasher(include_dirs, prefixes)
        return self._hashers[key]


SRC, OUT = "@SRC@", "@OUT@"  # the build paths in a recipe's argv (tasks/state/recipes.py)


def legacy_entry(family: str, source: str, argv: list[str], toolchain: Toolchain) -> str:
    """The 0.1.x entry a recipe (`<nvcc> @SRC@ -cubin -o @OUT@ <flags>`) builds under `toolchain`."""
    if argv[:4] != [SRC, "-cubin", "-o", OUT]:
        raise KeyUnknown(f"not the argv 0.1.x builds with: {' '.join(argv[:4])}")
    if not (nvcc_release := release(toolchain.nvcc_version)):
        raise KeyUnknown("no release in `nvcc --version`")
    return legacy_name(family, nvcc_release, " ".join(argv[4:]), source)


def deepjit_entry(tag: str, source: str, argv: list[str], toolchain: Toolchain) -> str:
    """The 0.2.x entry a recipe (`<nvcc> @SRC@ --cubin --output-file @OUT@ <flags> --include-path
    <dir>...`) builds under `toolchain`."""
    if argv[:4] != [SRC, "--cubin", "--output-file", OUT]:
        raise KeyUnknown(f"not the argv DeepJIT builds with: {' '.join(argv[:4])}")
    if toolchain.deepjit is None:
        raise KeyUnknown("DeepJIT's config is not known here (no entry DeepJIT built records it)")
    rest = argv[4:]
    cut = rest.index("--include-path") if "--include-path" in rest else len(rest)
    flags, includes = rest[:cut], rest[cut:]
    if len(includes) % 2 or any(a != "--include-path" for a in includes[::2]):
        raise KeyUnknown(f"flags after the include paths: {' '.join(includes)}")
    digest = toolchain.hasher(includes[1::2]).source(source)
    return deepjit_name(tag, toolchain.deepjit.get("extra_signature", ""), toolchain.nvcc_version, flags, digest)
