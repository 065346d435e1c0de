"""Compile workers' token scales (tasks/runner/child/executors.py, aligned=True) against a
stand-in torch that only keeps shapes and strides: on SM90 they must already have the layout
DeepGEMM's get_mn_major_tma_aligned_tensor returns as is (csrc/jit_kernels/impls/smxx_layout.hpp:
`(stride(0) == tma_aligned_mn * sf_k or dim == 2) and stride(1) == 1 and stride(2) == tma_aligned_mn`
on the batched view), so no transpose kernel runs; a probe, and any replay, passes sglang's rows."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from tasks.runner.child import executors


class _Tensor:
    def __init__(self, shape, strides=None):
        self.shape = tuple(shape)
        self.strides = strides or tuple(_contiguous(self.shape))

    def __getitem__(self, rows):
        return _Tensor((len(range(*rows.indices(self.shape[0]))), *self.shape[1:]), self.strides)

    def stride(self, dim):
        return self.strides[dim]

    def dim(self):
        return len(self.shape)

    def as_strided(self, shape, strides):
        return _Tensor(shape, tuple(strides))


def _contiguous(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return strides


def _make(shape, device=None, dtype=None):
    return _Tensor(shape if isinstance(shape, tuple) else (shape,))


class _Torch(SimpleNamespace):
    Tensor = _Tensor
    float8_e4m3fn = float32 = bfloat16 = int32 = "dtype"
    empty = ones = zeros = staticmethod(_make)

    def __init__(self, arch):
        super().__init__(cuda=SimpleNamespace(is_available=lambda: True, get_device_capability=lambda: (arch, 0)))


class _DeepGemm:
    """Keeps the token scales of each call."""

    def __init__(self):
        self.scales = []

    def fp8_gemm_nt(self, lhs, rhs, out, recipe):
        self.scales.append(lhs[1])

    def m_grouped_fp8_gemm_nt_contiguous(self, lhs, rhs, out, m_indices):
        self.scales.append(lhs[1])

    def fp8_m_grouped_gemm_nt_masked(self, lhs, rhs, out, masked_m, expected_m):
        self.scales.append(lhs[1])


def deep_gemm_keeps(sf) -> bool:
    """DeepGEMM's test for scales it uses without a transpose (TMA alignment: 16 bytes of FP32)."""
    batched = (1, *sf.shape) if sf.dim() == 2 else sf.shape
    strides = (0, *sf.strides) if sf.dim() == 2 else sf.strides
    tma = -(-batched[1] // 4) * 4
    return (sf.dim() == 2 or strides[0] == tma * batched[2]) and strides[1] == 1 and strides[2] == tma


@pytest.mark.parametrize("kind,groups", [("GEMM_NT_F8F8BF16", 1), ("GROUPED_GEMM_NT_F8F8BF16_CONTIG", 8),
                                         ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 32)])
def test_on_sm90_a_worker_passes_token_scales_deep_gemm_keeps_and_a_probe_passes_sglangs(monkeypatch, kind, groups):
    monkeypatch.setitem(sys.modules, "torch", _Torch(arch=9))
    dg = _DeepGemm()
    worker = executors.create(dg, kind, 4096, 7168, groups, 16384, aligned=True)
    replay = executors.create(dg, kind, 4096, 7168, groups, 16384)
    for m in (1, 3, 4, 5, 127, 4096, 16383, 16384):
        worker.execute(m)
        assert deep_gemm_keeps(dg.scales[-1]), (m, dg.scales[-1].shape, dg.scales[-1].strides)
        for sglang_call in (worker.probe, replay.execute):
            sglang_call(m)
            assert not deep_gemm_keeps(dg.scales[-1]) and dg.scales[-1].strides[-1] == 1  # sglang's rows
        assert worker.aligned and not replay.aligned


@pytest.mark.parametrize("arch,kind", [(10, "GEMM_NT_F8F8BF16"), (9, "GEMM_NT_F8F8BF16_BLOCK32"),
                                       (9, "GROUPED_GEMM_NT_BF16_CONTIG")])
def test_elsewhere_a_worker_passes_what_sglang_passes(monkeypatch, arch, kind):
    monkeypatch.setitem(sys.modules, "torch", _Torch(arch))
    dg = SimpleNamespace(fp8_gemm_nt=lambda *a, **k: None, m_grouped_bf16_gemm_nt_contiguous=lambda *a: None)
    assert not executors.create(dg, kind, 4096, 7168, 8, 1024, aligned=True).aligned
