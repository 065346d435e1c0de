"""What a DeepGEMM cache entry was built for, read from its generated kernel.cu. Pure.

DeepGEMM writes each kernel as one template instantiation (csrc/jit_kernels/impls/*.hpp),
in both layouts:

    static void __instantiate_kernel() {
        auto ptr = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<
            cute::UMMA::Major::K,
            0, 4096, 7168,
            8,
            128, 192, 128,
            ...
            132, GemmType::MGroupedContiguous,
            epilogue::transform::EpilogueIdentity
        >);
    };

The sm90 GEMM impls start with the operands' majors, then SHAPE_M, SHAPE_N, SHAPE_K and
the group count, in sgl-deep-gemm 0.1.2 (tests/data/kernels/0.1.x, built on an H200) and
in 0.2.3.post2 (the format strings in its _C.so). A 0 makes that dimension a runtime
argument: sglang calls the normal GEMMs with compiled_dims '', so their kernels serve any
N and K and name neither; grouped kernels carry both.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from tasks.plan.gemms import Kind

SOURCE = "kernel.cu"
_INSTANCE = re.compile(r"reinterpret_cast<void\s*\*>\(\s*&\s*([A-Za-z_][\w:]*)\s*<(.*)>\s*\)", re.S)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_GEMM_TYPE = re.compile(r"GemmType::(\w+)")
_RUNTIME_NK = ("N and K are runtime arguments of this kernel: sglang builds its normal GEMMs for any N and K, "
               "so the source does not say which shape needed it")

# (operand family, DeepGEMM's GemmType) -> sglang's DeepGemmKernelType
_KINDS = {
    ("fp8", "Normal"): Kind.NORMAL,
    ("fp8", "MGroupedContiguous"): Kind.CONTIG,
    ("fp8", "MGroupedMasked"): Kind.MASKED,
    ("bf16", "MGroupedContiguous"): Kind.BF16_CONTIG,
    ("bf16", "MGroupedMasked"): Kind.BF16_MASKED,
}


class KernelSource(msgspec.Struct, frozen=True):
    function: str  # the instantiated template, e.g. sm90_fp8_gemm_1d2d_impl; "" if none was found
    kind: str | None = None  # sglang's kernel type name
    n: int | None = None
    k: int | None = None
    groups: int | None = None
    note: str = ""  # why the shape is not known, when it is not

    @property
    def shape(self) -> tuple[str, int, int, int] | None:
        """(kind, N, K, groups) when the source names all four."""
        if self.kind is None or self.n is None or self.k is None or self.groups is None:
            return None
        return self.kind, self.n, self.k, self.groups

    def describe(self) -> str:
        if self.shape is not None:
            return f"{self.kind} N={self.n} K={self.k} groups={self.groups}"
        head = self.kind or self.function or "unknown kernel"
        return f"{head}: {self.note}" if self.note else head


def read(entry: Path) -> KernelSource:
    """Parse `entry/kernel.cu`; a missing or unreadable source gives a note, never an error."""
    try:
        text = (Path(entry) / SOURCE).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return KernelSource("", note=f"{SOURCE} unreadable ({exc.strerror or exc})")
    return parse(text)


def parse(text: str) -> KernelSource:
    match = _INSTANCE.search(_COMMENT.sub("", text))
    if match is None:
        return KernelSource("", note="no kernel instantiation in its source")
    function, args = match.group(1).rsplit("::", 1)[-1], _split(match.group(2))
    if "mqa_logits" in function:
        return _indexer(function, args)
    family = "fp8" if "fp8" in function else "bf16" if "bf16" in function else None
    gemm_type = next((m.group(1) for a in args if (m := _GEMM_TYPE.fullmatch(a))), None)
    if family is None or "gemm" not in function or gemm_type is None:
        return KernelSource(function, note="not a GEMM kernel: it has no shape of its own")
    kind = _KINDS.get((family, gemm_type))
    if family == "bf16" and gemm_type == "Normal" and args and args[-1] == "float":
        kind = Kind.BF16F32
    if kind is None:
        return KernelSource(function, note=f"{family} GEMM of type {gemm_type}: not one of sglang's warmup types")
    dims = args[next((i for i, a in enumerate(args) if "Major" not in a), len(args)):][:4]
    if len(dims) < 4 or not all(d.isdigit() for d in dims):
        return KernelSource(function, kind.value, note="its template arguments are not laid out as expected")
    _, n, k, groups = map(int, dims)
    if not n or not k:
        return KernelSource(function, kind.value, groups=groups, note=_RUNTIME_NK)
    return KernelSource(function, kind.value, n, k, groups)


def guess_seconds(text: str) -> float:
    """A rough nvcc time for a kernel never compiled here, only to build the longest first.
    nvcc's time grows with a GEMM's tile (BLOCK_M x BLOCK_N, after the majors, the shape and
    the group count); the indexer's logits take ~1.7 s, anything else (transposes,
    schedules) ~1 s. Fitted on the 82 kernels of a cold warm on an H100 (sgl-deep-gemm 0.1.2,
    GEMMs 1.5-5.7 s; rank correlation 0.87, among the GEMMs 0.67):
    bench/results/nvcc_times_by_tile-h100-2026-12-07.json."""
    match = _INSTANCE.search(_COMMENT.sub("", text))
    if match is None:
        return 1.0
    function, args = match.group(1).rsplit("::", 1)[-1], _split(match.group(2))
    if "mqa_logits" in function and "metadata" not in function:
        return 1.7
    if "gemm" not in function:
        return 1.0
    numbers = args[next((i for i, a in enumerate(args) if "Major" not in a), len(args)):][4:6]
    if len(numbers) < 2 or not all(n.isdigit() for n in numbers):
        return 1.0
    return 1.5 + int(numbers[0]) * int(numbers[1]) / 6000


def _indexer(function: str, args: list[str]) -> KernelSource:
    """The DSA indexer's kernels (tasks/plan/indexer.py): sm90_fp8_paged_mqa_logits<next_n, heads,
    head dim, ...>, sm90_fp8_mqa_logits<heads, head dim, ...>; the decode schedule has no heads."""
    if "metadata" in function:
        return KernelSource(function, Kind.PAGED_MQA_LOGITS.value,
                            note="the decode indexer's schedule: built per 32 rows and the SM count, for any heads")
    paged = "paged" in function
    kind = Kind.PAGED_MQA_LOGITS if paged else Kind.MQA_LOGITS
    want = 3 if paged else 2
    numbers = args[:want]
    if len(numbers) < want or not all(a.isdigit() for a in numbers):
        return KernelSource(function, kind.value, note="its template arguments are not laid out as expected")
    if paged:
        next_n, heads, dim = map(int, numbers)
        return KernelSource(function, kind.value, heads, dim, next_n)
    heads, dim = map(int, numbers)
    return KernelSource(function, kind.value, heads, dim, 1)


def _split(args: str) -> list[str]:
    """Top-level template arguments (nested <...> and (...) kept whole)."""
    out, depth, current = [], 0, []
    for ch in args:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        out.append("".join(current).strip())
    return out
