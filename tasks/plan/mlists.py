"""The M values SGLang sweeps per GEMM shape at server start (compile_utils.py).

Mirrors `update_deep_gemm_config` and the CONTIG filter in
`_compile_deep_gemm_one_type_all`, so a warm covers exactly what the server runs.
"""

from __future__ import annotations


import msgspec

from tasks.plan.launch_args import ServerFlags

# sglang 0.5.23's chunked_prefill_size default by GPU memory in MiB (arg_groups/memory_hook.py:89-170):
# below 20 GiB 2048, below 60 GiB 4096, below 160 GiB 8192 (H100, H200), else 16384 (B200, MI300).
_CHUNKED_PREFILL_BY_MEMORY = ((20 * 1024, 2048), (60 * 1024, 4096), (160 * 1024, 8192))
_CHUNKED_PREFILL_LARGEST = 16384
# Planning on a host without a visible GPU: the 60-160 GiB class (H100, H200), stated in the note.
ASSUMED_CHUNKED_PREFILL = 8192
# deep_gemm.get_mk_alignment_for_contiguous_layout() on sm90; each replay re-checks it.
CONTIG_ALIGNMENT = 128


class MListPolicy(msgspec.Struct, frozen=True):
    """How a launch tuple's M list is chosen, with the inputs it depends on."""

    mode: str  # "default" | "fast" | "explicit"
    chunked_prefill_size: int
    explicit: tuple[int, ...] = ()
    note: str = ""

    def values(self) -> list[int]:
        if self.mode == "explicit":
            return sorted(set(self.explicit))
        if self.mode == "fast":
            return fast_m_list(self.chunked_prefill_size)
        return default_m_list(self.chunked_prefill_size)

    def describe(self) -> str:
        if self.mode == "explicit":
            return f"explicit ({len(set(self.explicit))} values)"
        return f"{self.mode} (chunked_prefill_size {self.chunked_prefill_size}{self.note})"


def default_m_list(chunked_prefill_size: int) -> list[int]:
    m_max = 16 * 1024
    if chunked_prefill_size < 1:
        m_max = 64 * 1024
    elif chunked_prefill_size > 8192:
        m_max = chunked_prefill_size * 2
    m_max = min(128 * 1024, m_max)
    return list(range(1, m_max + 1))


def fast_m_list(chunked_prefill_size: int) -> list[int]:
    values = list(range(1, 1025))
    max_prefill = min(chunked_prefill_size, 32 * 1024) if chunked_prefill_size >= 1 else 16 * 1024
    next_m, step = 1024, 2
    while next_m < max_prefill:
        values += range(next_m, 2 * next_m, step)
        next_m *= 2
        step *= 2
    values.append(max_prefill)
    return sorted(set(values))


def for_kind(kind_is_contig: bool, values: list[int], alignment: int = CONTIG_ALIGNMENT) -> list[int]:
    """CONTIG kernels are only run at M divisible by the layout alignment."""
    if not kind_is_contig:
        return values
    return [m for m in values if m % alignment == 0]


def default_chunked_prefill(gpu_memory_mib: int | None) -> tuple[int, str]:
    """sglang's default for a GPU of this memory, and how it was chosen."""
    if gpu_memory_mib is None:
        return ASSUMED_CHUNKED_PREFILL, ", no GPU visible here: assumed sglang's default for 60-160 GiB GPUs"
    size = next((size for below, size in _CHUNKED_PREFILL_BY_MEMORY if gpu_memory_mib < below),
                _CHUNKED_PREFILL_LARGEST)
    return size, f", sglang's default for a {gpu_memory_mib // 1024} GiB GPU"


def effective_chunked_prefill(flags: ServerFlags, gpu_memory_mib: int | None = None) -> tuple[int, str]:
    """The chunked_prefill_size the server's warmup reads, and how it came about."""
    note = ""
    size = flags.chunked_prefill_size
    if size is None:
        size, note = default_chunked_prefill(gpu_memory_mib)
    if flags.attn_dp_size > 1:
        # parallel_hook.py:326-332: divided among the attention-DP groups before the warmup reads it.
        size = size // flags.attn_dp_size
        note += f", divided by attention DP {flags.attn_dp_size}"
    return size, note


def policy(flags: ServerFlags, fast_warmup: bool, override, gpu_memory_mib: int | None = None) -> MListPolicy:
    """Pick the M list: an explicit override wins, then the tuple's mode, then the env."""
    size, note = effective_chunked_prefill(flags, gpu_memory_mib)
    if isinstance(override, (list, tuple)):
        return MListPolicy("explicit", size, tuple(override))
    mode = override or ("fast" if fast_warmup else "default")
    return MListPolicy(mode, size, note=note)
