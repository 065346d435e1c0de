"""Replay one GEMM shape's full sweep and report the cache entries it used.

Runs in a child forked by tasks/zygote.py, one per shape, after the compile pool.

The sweep runs against a private view of the cache (tasks/cacheview.py), so the entries
it reports are exactly those this process loaded or created.

A child exits 0 when done; 3 (EXIT_ENV) for an environment problem, reported as one line.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from pathlib import Path

from tasks.state import records
from tasks.state.cacheroot import CacheRoot
from tasks.state.cacheview import CacheView

EXIT_ENV = 3


class EnvironmentProblem(Exception):
    """No GPU, no deep_gemm, or a mismatch the planner must know about."""


PROBLEM_PREFIX = "jitwarm worker: "


def problem_line(log_tail: list[str]) -> str:
    """The one-line environment problem a child reported (EXIT_ENV), from its log tail."""
    line = next((ln for ln in reversed(log_tail) if ln.startswith(PROBLEM_PREFIX)), "")
    return line.removeprefix(PROBLEM_PREFIX)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for records and warnings."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{exc.__class__.__name__}: {text[:limit]}"


def run(plan: dict) -> dict:
    view = CacheView(CacheRoot.from_plan(plan["cache"]), Path(plan["staging"]))
    os.environ["DG_JIT_CACHE_DIR"] = str(view.path)

    started = time.monotonic()
    executor = _executor(plan)
    launches = sweep(executor, plan["m_values"], view)
    seconds = time.monotonic() - started
    used, created, how = view.commit()
    return {"schema": records.SCHEMA, "entries": used, "new": created, "calls": len(plan["m_values"]),
            "sweep_seconds": round(seconds, 3), "verification": how, "launches": launches}


CAPTURED = "captured, not run (first and last M run)"


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
        capture = _sweep(executor, chunk, capture)
        view.drain()
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  {first + len(chunk)}/{len(m_values)} M values, m={chunk[-1]}", flush=True)
    executor.sync()
    return CAPTURED if capture else "run"


CAPTURE_CHUNK = 256  # calls per graph: 0.70 s per 16384-call sweep vs 1.05 s at 64, same peak memory


def _sweep(executor, chunk: list[int], capture):
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
        from tasks.build.child import executors
        executors.start_device()


def _executor(plan: dict):
    module = plan["module"]
    dg = import_module(module)
    shape, m_values = plan["shape"], plan["m_values"]
    factory = getattr(dg, "jitwarm_executor", None)
    if factory is None:
        from tasks.build.child import executors
        factory = executors.create
    alignment = getattr(dg, "get_mk_alignment_for_contiguous_layout", None)
    if shape["kind"].endswith("_CONTIG") and alignment is not None:
        actual = int(alignment())
        if actual != plan["contig_alignment"]:
            raise EnvironmentProblem(f"{module} aligns contiguous layouts to {actual}, the plan assumed "
                                     f"{plan['contig_alignment']}; update tasks/mlists.CONTIG_ALIGNMENT")
    return factory(dg, shape["kind"], shape["n"], shape["k"], shape["groups"], max(m_values))

