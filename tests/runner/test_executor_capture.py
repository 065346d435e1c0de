"""executors._Base.capture against a stand-in for torch's graph-pool bookkeeping.

The stand-in keeps CUDACachingAllocator's rule (c10/cuda/CUDACachingAllocator.cpp): a
capture into an existing pool asserts use_count > 0, each captured graph holds one use
until it is destroyed. On the H200 a first capture that failed (a kernel another worker
was building) dropped the pool's only graph, and every later capture of that shape failed.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest

from tasks.runner.child import executors


class _Allocator:
    def __init__(self):
        self.use_count: dict[int, int] = {}
        self.ids = itertools.count(1)
        self.fail_end = False


class _Graph:
    def __init__(self, alloc):
        self.alloc, self.pool = alloc, None

    def capture_begin(self, pool, capture_error_mode):
        assert capture_error_mode == "relaxed"
        if pool in self.alloc.use_count:
            if self.alloc.use_count[pool] <= 0:
                raise RuntimeError("it->second->use_count > 0 INTERNAL ASSERT FAILED")
            self.alloc.use_count[pool] += 1
        else:
            self.alloc.use_count[pool] = 1
        self.pool = pool

    def capture_end(self):
        if self.alloc.fail_end:
            self.alloc.fail_end = False
            raise RuntimeError("operation failed due to a previous error during capture")

    def __del__(self):
        if self.pool is not None:
            self.alloc.use_count[self.pool] -= 1


class _Cuda:
    def __init__(self, alloc):
        self.alloc = alloc

    def graph_pool_handle(self):
        return next(self.alloc.ids)

    def CUDAGraph(self):  # noqa: N802 (torch's name)
        return _Graph(self.alloc)

    def Stream(self):  # noqa: N802
        return _Stream()

    def current_stream(self):
        return _Stream()

    def stream(self, _):
        return contextlib.nullcontext()


class _Stream:
    def wait_stream(self, _):
        pass


class _Torch:
    Tensor = type("Tensor", (), {})

    def __init__(self):
        self.cuda = _Cuda(_Allocator())
        self.cuda.empty_cache = lambda: None


class _Executor(executors._Base):
    def setup(self, n, k, groups, max_m):
        pass


def test_a_failed_first_capture_leaves_the_shape_capturable():
    ex = _Executor(_Torch(), None, 1, 1, 1, 1)
    with pytest.raises(ValueError), ex.capture():
        raise ValueError("kernel being built by another worker")
    for _ in range(3):
        with ex.capture():
            pass


def test_captures_share_one_pool_and_release_starts_a_new_one():
    torch = _Torch()
    ex = _Executor(torch, None, 1, 1, 1, 1)
    for _ in range(3):
        with ex.capture():
            pass
    assert list(torch.cuda.alloc.use_count) == [1]
    ex.release()
    with ex.capture():
        pass
    assert list(torch.cuda.alloc.use_count) == [1, 2]


def test_a_capture_that_cannot_even_end_moves_on_to_a_fresh_pool():
    torch = _Torch()
    ex = _Executor(torch, None, 1, 1, 1, 1)
    torch.cuda.alloc.fail_end = True
    with pytest.raises(ValueError), ex.capture():
        raise ValueError("a call that broke the capture")
    assert ex._last_graph is None  # a graph that never ended is not kept
    with ex.capture():
        pass
    assert list(torch.cuda.alloc.use_count) == [1, 2] and ex._capture_pool == 2
