"""Torch executors that call deep_gemm exactly as sglang 0.5.23's warmup does, one per
DeepGemmKernelType (srt/layers/deep_gemm_wrapper/compile_utils.py:269-505), and as its DSA
indexer calls the MQA-logits kernels (tasks/plan/indexer.py).

Only the forked children import this module; it is the one place that needs torch and a GPU.
FP8 types: e4m3 data, FP32 scales of (M, ceil(K/block)) and (ceil(N/block), ceil(K/block)),
BF16 output; BF16 types: BF16 data; CONTIG adds int32 zero m_indices, MASKED int32 zero
masked_m. tasks/plan/gpumem.buffer_bytes is sglang's memory formula for the same buffers.

Compile workers ask for `aligned` executors. On SM90, DeepGEMM turns sglang's row-major FP32
token scales (1 x 128 blocks) into an MN-major, TMA-aligned copy with a JIT kernel of its
own (transform_sf_into_required_layout -> get_mn_major_tma_aligned_tensor) before it even
picks the GEMM, and skips that kernel when the scales already have that layout. So an aligned
executor passes them that way: its calls find their GEMM kernels without waiting for the
transpose. The GEMM sees the same tensor either way, so it is the same kernel. `probe(m)`
makes the call exactly as sglang does, so the transpose is found too; the replay proves both.
"""

from __future__ import annotations

import contextlib

from tasks.plan import gpumem


def start_device() -> None:
    """Create this process's CUDA context now rather than at its first buffer."""
    import torch

    if torch.cuda.is_available():
        torch.empty(1, device="cuda")


def create(dg, kind: str, n: int, k: int, groups: int, max_m: int, aligned: bool = False):
    import torch

    from tasks.runner.child.protocol import EnvironmentProblem

    if not torch.cuda.is_available():
        raise EnvironmentProblem("no CUDA device visible to torch")
    cls = {
        "GEMM_NT_F8F8BF16": _Normal,
        "GEMM_NT_F8F8BF16_BLOCK32": _Block32,
        "GROUPED_GEMM_NT_F8F8BF16_CONTIG": _Contig,
        "GROUPED_GEMM_NT_F8F8BF16_MASKED": _Masked,
        "GROUPED_GEMM_NT_BF16_CONTIG": _BF16Contig,
        "GROUPED_GEMM_NT_BF16_MASKED": _BF16Masked,
        "GEMM_NT_BF16BF16F32": _BF16F32,
        "FP8_MQA_LOGITS": _MQALogits,
        "FP8_PAGED_MQA_LOGITS": _PagedMQALogits,
    }[kind]
    for name in cls.needs:
        if not callable(getattr(dg, name, None)):
            raise EnvironmentProblem(f"{getattr(dg, '__name__', 'deep_gemm')} has no {name}, which {kind} needs")
    executor = cls(torch, dg, n, k, groups, max_m)
    if aligned and getattr(cls, "token_scales", False) and torch.cuda.get_device_capability()[0] == 9:
        executor.align_scales()
    return executor


TMA_ALIGN_FP32 = 4  # DeepGEMM's get_tma_aligned_size: 16 bytes of FP32 along MN


def _tma_rows(m: int) -> int:
    return gpumem.ceil_div(m, TMA_ALIGN_FP32) * TMA_ALIGN_FP32


class _Base:
    token_scales = False  # FP32 1 x 128 token scales that DeepGEMM transposes on SM90 before the GEMM

    def __init__(self, torch, dg, n, k, groups, max_m):
        self.torch, self.dg = torch, dg
        self._capture_stream = self._capture_pool = self._last_graph = None
        self.aligned = False  # whether execute() passes token scales already in DeepGEMM's layout
        self.setup(n, k, groups, max_m)

    def probe(self, m):
        """The call as sglang makes it, layout kernel and all."""
        aligned, self.aligned = self.aligned, False
        try:
            self.execute(m)
        finally:
            self.aligned = aligned

    def align_scales(self):
        """Have execute() pass token scales MN-major and TMA-aligned (the module's docstring says why).
        Allocated now, not in a call: a call's allocation would come from its graph's pool."""
        max_m, sf_k = self.lhs_s.shape
        self.lhs_s_aligned = self.torch.ones(_tma_rows(max_m) * sf_k, device="cuda", dtype=self.torch.float32)
        self.aligned = True

    def lhs_scales(self, m):
        """The token scales of an M-row call: sglang's rows, or the same values as DeepGEMM lays them out."""
        if not self.aligned:
            return self.lhs_s[:m]
        return self.lhs_s_aligned.as_strided((m, self.lhs_s.shape[-1]), (1, _tma_rows(m)))

    def token_fp8(self, *dims_k, block=gpumem.BLOCK):
        *dims, k = dims_k
        t = self.torch
        return (t.empty(dims_k, device="cuda", dtype=t.float8_e4m3fn),
                t.ones((*dims, gpumem.ceil_div(k, block)), device="cuda", dtype=t.float32))

    def block_fp8(self, *dims_nk, block=gpumem.BLOCK):
        *dims, n, k = dims_nk
        t = self.torch
        return (t.empty(dims_nk, device="cuda", dtype=t.float8_e4m3fn),
                t.ones((*dims, gpumem.ceil_div(n, block), gpumem.ceil_div(k, block)),
                       device="cuda", dtype=t.float32))

    def bf16(self, *dims):
        return self.torch.empty(dims, device="cuda", dtype=self.torch.bfloat16)

    def sync(self):
        self.torch.cuda.synchronize()

    def release(self):
        """Free this shape's buffers (a shared replay moves on to another shape)."""
        for name in [n for n, v in vars(self).items() if isinstance(v, self.torch.Tensor)]:
            delattr(self, name)
        self._last_graph = self._capture_pool = None  # the pool dies with its last graph
        self.torch.cuda.empty_cache()

    @contextlib.contextmanager
    def capture(self):
        """Record the calls' launches in a CUDA graph that is never replayed.

        Each call still runs on the host exactly as an eager one: DeepGEMM picks the
        kernel for M, finds it in the cache (or compiles it), loads it and sets up the
        launch. Only the GEMMs themselves never run, which is most of a 16384-value
        sweep's time on large shapes. "relaxed" admits the module loads a first call does.

        Not torch.cuda.graph: it synchronises and empties the allocator's cache before
        every capture, so each graph's temporaries were allocated and freed anew. These
        graphs share one pool, and the last one is kept so the pool's memory stays (and so
        the pool stays live: torch cannot share a pool whose graphs are all gone).
        """
        torch = self.torch
        if self._capture_stream is None:
            self._capture_stream = torch.cuda.Stream()
        if self._capture_pool is None:
            self._capture_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        self._capture_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._capture_stream):
            graph.capture_begin(pool=self._capture_pool, capture_error_mode="relaxed")
            try:
                yield
            except BaseException:
                try:  # end the capture; the call's error is what counts
                    graph.capture_end()
                except Exception:
                    self._capture_pool = torch.cuda.graph_pool_handle()  # the old one may still be recording
                else:
                    # Keep even a failed call's graph: a pool whose graphs are all gone cannot be
                    # shared again (CUDACachingAllocator asserts use_count > 0 at capture_begin).
                    self._last_graph = graph
                raise
            graph.capture_end()
        torch.cuda.current_stream().wait_stream(self._capture_stream)
        self._last_graph = graph


class _Normal(_Base):
    """_NormalWarmupExecutor (compile_utils.py:414-429): the recipe names the block size."""

    needs = ("fp8_gemm_nt",)
    block = gpumem.BLOCK
    token_scales = True

    def setup(self, n, k, groups, max_m):
        self.recipe = (1, self.block, self.block)
        self.lhs_q, self.lhs_s = self.token_fp8(max_m, k, block=self.block)
        self.rhs_q, self.rhs_s = self.block_fp8(n, k, block=self.block)
        self.out = self.bf16(max_m, n)

    def execute(self, m):
        self.dg.fp8_gemm_nt((self.lhs_q[:m], self.lhs_scales(m)), (self.rhs_q, self.rhs_s), self.out[:m],
                            recipe=self.recipe)


class _Block32(_Normal):
    """GEMM_NT_F8F8BF16_BLOCK32: the same executor at block size 32 (compile_utils.py:274-276).
    Its 1 x 32 scales take another path through DeepGEMM, so they stay as sglang passes them."""

    block = 32
    token_scales = False


class _BF16F32(_Base):
    """_BF16F32WarmupExecutor (compile_utils.py:484-491): bf16 x bf16 -> fp32."""

    needs = ("bf16_gemm_nt",)

    def setup(self, n, k, groups, max_m):
        self.lhs, self.rhs = self.bf16(max_m, k), self.bf16(n, k)
        self.out = self.torch.empty((max_m, n), device="cuda", dtype=self.torch.float32)

    def execute(self, m):
        self.dg.bf16_gemm_nt(self.lhs[:m], self.rhs, self.out[:m])


class _BF16Contig(_Base):
    """_BF16GroupedContWarmupExecutor (compile_utils.py:448-461)."""

    needs = ("m_grouped_bf16_gemm_nt_contiguous",)

    def setup(self, n, k, groups, max_m):
        self.a, self.b = self.bf16(max_m, k), self.bf16(groups, n, k)
        self.m_indices = self.torch.zeros((max_m,), device="cuda", dtype=self.torch.int32)
        self.out = self.bf16(max_m, n)

    def execute(self, m):
        self.dg.m_grouped_bf16_gemm_nt_contiguous(self.a[:m], self.b, self.out[:m], self.m_indices[:m])


class _BF16Masked(_Base):
    """_BF16GroupedMaskedWarmupExecutor (compile_utils.py:494-505), on small buffers as _Masked."""

    needs = ("m_grouped_bf16_gemm_nt_masked",)

    def setup(self, n, k, groups, max_m):
        rows = min(max_m, gpumem.MASKED_ROWS)
        self.a, self.b = self.bf16(groups, rows, k), self.bf16(groups, n, k)
        self.masked_m = self.torch.zeros((groups,), device="cuda", dtype=self.torch.int32)
        self.out = self.bf16(groups, rows, n)

    def execute(self, m):
        self.dg.m_grouped_bf16_gemm_nt_masked(self.a, self.b, self.out, masked_m=self.masked_m, expected_m=m)


class _Contig(_Base):
    needs = ("m_grouped_fp8_gemm_nt_contiguous",)
    token_scales = True

    def setup(self, n, k, groups, max_m):
        self.lhs_q, self.lhs_s = self.token_fp8(max_m, k)
        self.rhs_q, self.rhs_s = self.block_fp8(groups, n, k)
        self.m_indices = self.torch.zeros((max_m,), device="cuda", dtype=self.torch.int32)
        self.out = self.torch.empty((max_m, n), device="cuda", dtype=self.torch.bfloat16)

    def execute(self, m):
        self.dg.m_grouped_fp8_gemm_nt_contiguous(
            (self.lhs_q[:m], self.lhs_scales(m)), (self.rhs_q, self.rhs_s), self.out[:m], self.m_indices[:m])


class _Masked(_Base):
    needs = ("fp8_m_grouped_gemm_nt_masked",)
    token_scales = True

    def setup(self, n, k, groups, max_m):
        rows = min(max_m, gpumem.MASKED_ROWS)
        self.lhs_q, self.lhs_s = self.token_fp8(groups, rows, k)
        self.rhs_q, self.rhs_s = self.block_fp8(groups, n, k)
        self.masked_m = self.torch.zeros((groups,), device="cuda", dtype=self.torch.int32)
        self.out = self.torch.empty((groups, rows, n), device="cuda", dtype=self.torch.bfloat16)

    def align_scales(self):
        # One fixed buffer (expected_m is not its size): (groups, rows, sf_k), MN-major, TMA-aligned.
        groups, rows, sf_k = self.lhs_s.shape
        padded = _tma_rows(rows)
        flat = self.torch.ones(groups * padded * sf_k, device="cuda", dtype=self.torch.float32)
        self.lhs_s_aligned = flat.as_strided((groups, rows, sf_k), (padded * sf_k, 1, padded))
        self.aligned = True

    def execute(self, m):
        # DeepGEMM picks the masked config from expected_m, not from the buffer shape.
        scales = self.lhs_s_aligned if self.aligned else self.lhs_s
        self.dg.fp8_m_grouped_gemm_nt_masked(
            (self.lhs_q, scales), (self.rhs_q, self.rhs_s), self.out, self.masked_m, m)


class _MQALogits(_Base):
    """The prefill indexer's call (dsa_indexer.py:1604-1615): q [m, heads, dim] FP8, the
    KV as (FP8 [m, dim], FP32 scales [m]), FP32 weights [m, heads], causal ks/ke, no
    max_seqlen_k, clean_logits False. `n` is the heads after sglang's padding to 32."""

    needs = ("fp8_mqa_logits",)

    def setup(self, n, k, groups, max_m):
        t = self.torch
        self.q = t.zeros((max_m, n, k), device="cuda", dtype=t.float8_e4m3fn)
        self.kv = t.zeros((max_m, k), device="cuda", dtype=t.float8_e4m3fn)
        self.kv_scales = t.ones((max_m,), device="cuda", dtype=t.float32)
        self.weights = t.ones((max_m, n), device="cuda", dtype=t.float32)
        self.ks = t.zeros((max_m,), device="cuda", dtype=t.int32)
        self.ke = t.arange(1, max_m + 1, device="cuda", dtype=t.int32)

    def execute(self, m):
        self.dg.fp8_mqa_logits(self.q[:m], (self.kv[:m], self.kv_scales[:m]), self.weights[:m],
                               self.ks[:m], self.ke[:m], clean_logits=False)


class _PagedMQALogits(_Base):
    """The decode indexer at `rows` rows (dsa_backend.py:1364-1382; dsa_indexer.py:1254-1378;
    kernels/ops/attention/dsa/paged_mqa_logits.py:69-92): the schedule for 2-D context lens
    [rows, next_n] at KV block 64 on every SM, then the logits of q [rows, next_n, heads, dim]
    against a paged FP8 cache of [blocks, 64, 1, dim + 4] bytes; rows above the SM count go
    in chunks of that many, each with its own schedule, as sglang's _chunked_fp8_paged_mqa_logits."""

    needs = ("fp8_paged_mqa_logits", "get_paged_mqa_logits_metadata", "get_num_sms")
    block_kv = 64  # dsa_backend.py:1377-1381: the schedule's block_kv is always 64
    blocks = 4  # a 256-token context: no template parameter depends on it

    def setup(self, n, k, groups, max_m):
        t = self.torch
        self.sms = int(self.dg.get_num_sms())
        self.q = t.zeros((max_m, groups, n, k), device="cuda", dtype=t.float8_e4m3fn)
        self.kv_cache = t.zeros((self.blocks, self.block_kv, 1, k + 4), device="cuda", dtype=t.uint8)
        self.weights = t.ones((max_m * groups, n), device="cuda", dtype=t.float32)
        self.context_lens = t.ones((max_m, groups), device="cuda", dtype=t.int32)
        self.block_table = t.zeros((max_m, self.blocks), device="cuda", dtype=t.int32)
        self.next_n = groups

    def execute(self, rows):
        # The forward's schedule covers every row (init_forward_metadata, dsa_backend.py:1380-1382).
        schedule = self.dg.get_paged_mqa_logits_metadata(self.context_lens[:rows], self.block_kv, self.sms)
        if rows <= self.sms:
            self._logits(0, rows, schedule)
            return
        for start in range(0, rows, self.sms):
            end = min(start + self.sms, rows)
            self._logits(start, end, self.dg.get_paged_mqa_logits_metadata(
                self.context_lens[start:end], self.block_kv, self.sms))

    def _logits(self, start, end, schedule):
        self.dg.fp8_paged_mqa_logits(self.q[start:end], self.kv_cache,
                                     self.weights[start * self.next_n:end * self.next_n],
                                     self.context_lens[start:end], self.block_table[start:end], schedule,
                                     self.blocks * self.block_kv, clean_logits=False)
