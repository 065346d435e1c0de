"""Replay one GEMM shape's full sweep and report the cache entries it used.

Runs in a child forked by the zygote, one per shape, after the compile pool.

The sweep runs against a private view of the cache (tasks/state/cacheview.py), so the
entries it reports are exactly those this process loaded or created.

A child exits 0 when done; EXIT_ENV (protocol.py) for an environment problem, as one line.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from pathlib import Path

from tasks.runner.child.protocol import CAPTURE_CHUNK, CAPTURED, EnvironmentProblem, ReplayPlan, Shape
from tasks.state.cacheroot import CacheRoot
from tasks.state.cacheview import CacheView
from tasks.state.schema import Replayed


def run(plan: ReplayPlan, view: CacheView | None = None) -> Replayed:
    """Replay the plan's shape; `view`: a view prepared before the shape was known (a standby
    process, tasks/runner/child/zygote.py), which stages what the roots gained since."""
    if view is None:
        view = prepare(plan.cache, Path(plan.staging))
    else:
        view.refresh()

    started = time.monotonic()
    executor = executor_for(plan.module, plan.shape, plan.m_values, plan.contig_alignment)
    launches = sweep(executor, plan.m_values, view)
    seconds = time.monotonic() - started
    used, created, how = view.commit()
    return Replayed(entries=used, new=created, calls=len(plan.m_values), sweep_seconds=round(seconds, 3),
                    verification=how, launches=launches)


def prepare(cache, staging: Path) -> CacheView:
    """This process's private view of the cache, where deep_gemm will look (before its import)."""
    view = CacheView(CacheRoot.from_plan(cache), staging)
    os.environ["DG_JIT_CACHE_DIR"] = str(view.path)
    return view


def sweep(executor, m_values: list[int], view: CacheView) -> str:
    """Make every call of `m_values`; return how their launches went (CAPTURED or "run").

    The first and last M run eagerly, so the kernels are seen to execute on this GPU;
    the rest are captured (see executors._Base.capture) where the executor can.
    """
    for m in dict.fromkeys([m_values[0], m_values[-1]]):
        executor.execute(m)
    executor.sync()
    capture = getattr(executor, "capture", None)
    last_report = time.monotonic()
    for first in range(0, len(m_values), CAPTURE_CHUNK):
        chunk = m_values[first:first + CAPTURE_CHUNK]
        capture = sweep_chunk(executor, chunk, capture)
        view.drain()
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  {first + len(chunk)}/{len(m_values)} M values, m={chunk[-1]}", flush=True)
    executor.sync()
    return CAPTURED if capture else "run"


def sweep_chunk(executor, chunk: list[int], capture):
    """Run one chunk of calls; return the capture to use for the next (None: run eagerly)."""
    if capture is not None:
        try:
            with capture():
                for m in chunk:
                    executor.execute(m)
            return capture
        except Exception as exc:
            print(f"  graph capture failed ({exc.__class__.__name__}: {exc}); running the sweep eagerly",
                  flush=True)
            with contextlib.suppress(Exception):  # a broken context shows again in the eager calls
                executor.sync()
    for m in chunk:
        executor.execute(m)
    return None


def import_module(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EnvironmentProblem(f"cannot import {module}: {exc}") from None


def start_device(module: str) -> None:
    """Import deep_gemm and create the CUDA context its executors will use."""
    if getattr(import_module(module), "jitwarm_executor", None) is None:
        from tasks.runner.child import executors
        executors.start_device()


def factory_of(dg):
    """What makes executors for `dg`: a stand-in's own, else sglang's calls (executors.py)."""
    factory = getattr(dg, "jitwarm_executor", None)
    if factory is None:
        from tasks.runner.child import executors
        factory = executors.create
    return factory


def executor_for(module: str, shape: Shape, m_values: list[int], contig_alignment: int):
    """The executor of `shape` over `m_values`."""
    dg = import_module(module)
    alignment = getattr(dg, "get_mk_alignment_for_contiguous_layout", None)
    if shape.kind.endswith("_CONTIG") and alignment is not None:
        actual = int(alignment())
        if actual != contig_alignment:
            raise EnvironmentProblem(f"{module} aligns contiguous layouts to {actual}, the plan assumed "
                                     f"{contig_alignment}; update tasks/plan/mlists.CONTIG_ALIGNMENT")
    return factory_of(dg)(dg, shape.kind, shape.n, shape.k, shape.groups, max(m_values))

