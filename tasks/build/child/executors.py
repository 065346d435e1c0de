"""Torch executors that call deep_gemm exactly as sglang's warmup does (compile_utils.py).

Only the forked children import this module; it is the one place that needs torch and a GPU.
Inputs: FP8 e4m3 data, FP32 scales of (M, ceil(K/128)) and (ceil(N/128), ceil(K/128)),
BF16 output; CONTIG adds int32 zero m_indices, MASKED int32 zero masked_m.
tasks/plan/gpumem.buffer_bytes is sglang's memory formula for the same buffers.
"""

from __future__ import annotations

import contextlib

from tasks.plan import gpumem


def start_device() -> None:
    """Create this process's CUDA context now rather than at its first buffer."""
    import torch

    if torch.cuda.is_available():
        torch.empty(1, device="cuda")


def create(dg, kind: str, n: int, k: int, groups: int, max_m: int):
    import torch

    from tasks.build.child.protocol import EnvironmentProblem

    if not torch.cuda.is_available():
        raise EnvironmentProblem("no CUDA device visible to torch")
    cls = {
        "GEMM_NT_F8F8BF16": _Normal,
        "GROUPED_GEMM_NT_F8F8BF16_CONTIG": _Contig,
        "GROUPED_GEMM_NT_F8F8BF16_MASKED": _Masked,
    }[kind]
    return cls(torch, dg, n, k, groups, max_m)


class _Base:
    def __init__(self, torch, dg, n, k, groups, max_m):
        self.torch, self.dg = torch, dg
        self._capture_stream = self._capture_pool = self._last_graph = None
        self.setup(n, k, groups, max_m)

    def token_fp8(self, *dims_k):
        *dims, k = dims_k
        t = self.torch
        return (t.empty(dims_k, device="cuda", dtype=t.float8_e4m3fn),
                t.ones((*dims, gpumem.ceil_div(k, gpumem.BLOCK)), device="cuda", dtype=t.float32))

    def block_fp8(self, *dims_nk):
        *dims, n, k = dims_nk
        t = self.torch
        return (t.empty(dims_nk, device="cuda", dtype=t.float8_e4m3fn),
                t.ones((*dims, gpumem.ceil_div(n, gpumem.BLOCK), gpumem.ceil_div(k, gpumem.BLOCK)),
                       device="cuda", dtype=t.float32))

    def sync(self):
        self.torch.cuda.synchronize()

    def release(self):
        """Free this shape's buffers (a shared replay moves on to another shape)."""
        for name in [n for n, v in vars(self).items() if isinstance(v, self.torch.Tensor)]:
            delattr(self, name)
        self._last_graph = None
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
        graphs share one pool, and the last one is kept so the pool's memory stays.
        """
        torch = self.torch
        if self._capture_stream is None:
            self._capture_stream, self._capture_pool = torch.cuda.Stream(), torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        self._capture_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._capture_stream):
            graph.capture_begin(pool=self._capture_pool, capture_error_mode="relaxed")
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):  # end the capture; the call's error is what counts
                    graph.capture_end()
                raise
            graph.capture_end()
        torch.cuda.current_stream().wait_stream(self._capture_stream)
        self._last_graph = graph


class _Normal(_Base):
    def setup(self, n, k, groups, max_m):
        self.lhs_q, self.lhs_s = self.token_fp8(max_m, k)
        self.rhs_q, self.rhs_s = self.block_fp8(n, k)
        self.out = self.torch.empty((max_m, n), device="cuda", dtype=self.torch.bfloat16)

    def execute(self, m):
        self.dg.fp8_gemm_nt((self.lhs_q[:m], self.lhs_s[:m]), (self.rhs_q, self.rhs_s), self.out[:m])


class _Contig(_Base):
    def setup(self, n, k, groups, max_m):
        self.lhs_q, self.lhs_s = self.token_fp8(max_m, k)
        self.rhs_q, self.rhs_s = self.block_fp8(groups, n, k)
        self.m_indices = self.torch.zeros((max_m,), device="cuda", dtype=self.torch.int32)
        self.out = self.torch.empty((max_m, n), device="cuda", dtype=self.torch.bfloat16)

    def execute(self, m):
        self.dg.m_grouped_fp8_gemm_nt_contiguous(
            (self.lhs_q[:m], self.lhs_s[:m]), (self.rhs_q, self.rhs_s), self.out[:m], self.m_indices[:m])


class _Masked(_Base):
    def setup(self, n, k, groups, max_m):
        rows = min(max_m, gpumem.MASKED_ROWS)
        self.lhs_q, self.lhs_s = self.token_fp8(groups, rows, k)
        self.rhs_q, self.rhs_s = self.block_fp8(groups, n, k)
        self.masked_m = self.torch.zeros((groups,), device="cuda", dtype=self.torch.int32)
        self.out = self.torch.empty((groups, rows, n), device="cuda", dtype=self.torch.bfloat16)

    def execute(self, m):
        # DeepGEMM picks the masked config from expected_m, not from the buffer shape.
        self.dg.fp8_m_grouped_gemm_nt_masked(
            (self.lhs_q, self.lhs_s), (self.rhs_q, self.rhs_s), self.out, self.masked_m, m)
