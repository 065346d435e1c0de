"""Rough cost of warming a shape or a target, for `doit plan` and for balancing shards.

Pure planning: no GPU, no deep_gemm. Calibrated on sgl-deep-gemm 0.1.2 runs: a cold warm
of 20 shapes over 16384 M values each built 61 kernels on an H200
(bench/results/cold_warm_shipped-h200-2026-12-02-cac23a1.json), about 3 a shape: normal
GEMMs take N and K at run time, so their kernels serve many shapes, and the scale transpose
is one kernel for all. One nvcc compile takes about 3.9 s on one core (H100). Where a warm
already ran, `doit plan` shows the entries it recorded instead.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tasks.plan.gemms import Kind
from tasks.plan.targets import FALLBACK, ShapeWork, Target

NVCC_SECONDS = 3.9  # one kernel, one core: 158.6 s for 41 kernels, sequential, H100 host
# new kernels a shape adds ~ BASE + SLOPE * log2(len(M list)): 3 at 16384 values (61 for 20 shapes).
BASE, SLOPE = 1.0, 1 / 7


@dataclass(frozen=True)
class Cost:
    kernels: int
    nvcc_s: float  # summed compile time on one core

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.kernels + other.kernels, round(self.nvcc_s + other.nvcc_s, 1))


ZERO = Cost(0, 0.0)


def _of(kernels: int) -> Cost:
    return Cost(kernels, round(kernels * NVCC_SECONDS, 1))


def shape_cost(work: ShapeWork) -> Cost:
    count = len(work.m_values)
    if count == 0:
        return ZERO
    if work.shape.kind.indexer:
        # One logits kernel; the decode schedule adds one per 32 rows (tasks/plan/indexer.py).
        buckets = {(m + 31) // 32 for m in work.m_values} if work.shape.kind is Kind.PAGED_MQA_LOGITS else set()
        return _of(1 + len(buckets))
    return _of(min(count, round(BASE + SLOPE * math.log2(count))))


def target_cost(target: Target) -> Cost:
    total = ZERO
    for work in target.works:
        total = total + shape_cost(work)
    return total


def fallback_cost(all_targets: list[Target]) -> Cost:
    """A fallback target's shapes are unknown until its server runs: guess the median planned target."""
    planned = [target_cost(t) for t in all_targets if t.works]
    if not planned:  # nothing to compare with: one shape over the default 16384-value list
        return _of(round(BASE + SLOPE * 14))
    return _of(round(statistics.median(c.kernels for c in planned)))


def for_target(target: Target, all_targets: list[Target]) -> Cost:
    if target.error:
        return ZERO
    if target.path == FALLBACK:
        return fallback_cost(all_targets)
    return target_cost(target)
