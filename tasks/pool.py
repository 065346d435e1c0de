"""Compile pool: build the kernels of many shapes at once, on every usable core.

Every (shape, M) call is dealt to one of W worker processes. Each worker's slice starts
at a different shape and visits M values in a spread order, so at any moment the
workers mostly need different kernels. deep_gemm compiles through the nvcc shim
(tasks/nvcc_shim.sh), which builds each kernel once across all workers and processes
and tells a worker at once when another is already building what it needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import fingerprint, gpumem, records, supervise, worker
from .settings import REPO_ROOT, Settings
from .targets import ShapeWork

SHIM = REPO_ROOT / "tasks" / "nvcc_shim.sh"


@dataclass
class Report:
    workers: int = 0
    seconds: float = 0.0
    deferred: int = 0
    compiled: int = 0
    complete: set[str] = field(default_factory=set)  # shape keys every slice of which finished
    failures: dict[str, dict] = field(default_factory=dict)  # shape key -> {error, log_tail}
    m_values: dict[str, tuple[int, ...]] = field(default_factory=dict)  # after memory reduction
    reduced: dict[str, int] = field(default_factory=dict)  # shape key -> reduced max_m
    replay_slots: int = 1


def usable_cores(settings: Settings) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, settings.jobs) if settings.jobs else cores)


def plan_memory(works: list[ShapeWork], report: Report, cores: int, free: int | None, margin: int) -> int:
    """Fit the works in GPU memory: reduce what cannot fit (as sglang does), size the pool."""
    for work in works:
        report.m_values[work.key] = work.m_values
    if free is None:  # no reading (a test stand-in, or nvidia-smi missing): cores decide
        report.replay_slots = cores
        return cores
    budget = free - margin
    largest = 0
    for work in works:
        s = work.shape
        values, reduced = gpumem.reduce_to_fit(s.kind.value, s.n, s.k, s.groups, work.m_values, budget)
        report.m_values[work.key] = values
        if reduced is not None:
            report.reduced[work.key] = reduced
        if values:
            largest = max(largest, gpumem.worker_bytes(s.kind.value, s.n, s.k, s.groups, max(values)))
        else:
            need = gpumem.worker_bytes(s.kind.value, s.n, s.k, s.groups, gpumem.REDUCE_FLOOR) / gpumem.GIB
            report.failures[work.key] = {"error": f"does not fit in GPU memory: {need:.1f} GiB needed at max_m "
                                                  f"{gpumem.REDUCE_FLOOR}, {budget / gpumem.GIB:.1f} GiB available"}
    slots = max(1, budget // largest) if largest else cores
    report.replay_slots = int(min(cores, slots))
    return int(min(cores, slots))


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 so that any prefix is spread over the whole range (bit reversal)."""
    bits = max(1, (n - 1).bit_length())
    return sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))


def deal(works: list[ShapeWork], m_values: dict[str, tuple[int, ...]], slots: int) -> list[list[tuple[int, int]]]:
    """Each worker's calls: every shape's M values dealt round-robin in spread order, and
    each worker starting on a different shape."""
    count = len(works)
    per_shape: list[list[list[tuple[int, int]]]] = []
    for s, work in enumerate(works):
        values = m_values[work.key]
        hands: list[list[tuple[int, int]]] = [[] for _ in range(slots)]
        offset = s * slots // max(count, 1)
        for j, idx in enumerate(spread_order(len(values))):
            hands[(j + offset) % slots].append((s, values[idx]))
        per_shape.append(hands)
    slices = []
    for w in range(slots):
        start = w * count // slots
        slices.append([pair for t in range(count) for pair in per_shape[(start + t) % count][w]])
    return [s for s in slices if s]


def shim_env(store: Path, env: dict | None = None) -> dict:
    """Environment that routes deep_gemm's nvcc calls through the shim."""
    env = dict(os.environ if env is None else env)
    env["JITWARM_REAL_NVCC"] = fingerprint.nvcc_path(env)
    env["JITWARM_KSTORE"] = str(store)
    env["DG_JIT_NVCC_COMPILER"] = str(SHIM)
    env["JITWARM_NVCC_WAIT"] = "1"
    return env


def store_for(root: Path, fp: dict, max_age_s: float) -> Path:
    """The shim's store for this toolchain, shared by concurrent `doit warm` processes so
    that none compiles a kernel another is building. It holds copies (a later damaged
    cache entry cannot spoil them) and only needs to outlive concurrent runs: anything
    older than `max_age_s` is dropped."""
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    store = records.state_dir(root) / "kstore" / digest
    cutoff = time.time() - max_age_s
    for path in store.glob("*.cubin") if store.is_dir() else ():
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
    return store


def compile_all(works: list[ShapeWork], root: Path, fp: dict, settings: Settings, base_env: dict,
                store: Path) -> Report:
    report = Report()
    started = time.monotonic()
    module = fp["deep_gemm.module"]
    free = gpumem.free_bytes() if module == "deep_gemm" else None
    slots = plan_memory(works, report, usable_cores(settings), free, gpumem.margin_bytes())
    runnable = [w for w in works if report.m_values[w.key]]
    slices = deal(runnable, report.m_values, slots)
    report.workers = len(slices)
    if not slices:
        return report
    env = shim_env(store, base_env)
    compiled_before = _compiled_count(store)
    work_dir = records.state_dir(root) / "staging" / f"pool-{os.getpid()}-{int(time.time() * 1000)}"
    work_dir.mkdir(parents=True)
    shapes = [{"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups}
              for w in runnable]
    jobs = []
    for i, pairs in enumerate(slices):
        plan = work_dir / f"plan-{i}.json"
        plan.write_text(json.dumps({"module": module, "shapes": shapes, "pairs": pairs,
                                    "busy_flag": str(work_dir / f"busy-{i}")}))
        job_env = {**env, "JITWARM_BUSY_FLAG": str(work_dir / f"busy-{i}")}
        argv = [sys.executable, "-m", "tasks.compile_worker", str(plan), str(work_dir / f"result-{i}.json")]
        jobs.append(supervise.Job(argv, job_env, records.log_path(root, f"compile-{i}"), settings.shape_timeout_s,
                                  cwd=REPO_ROOT))
    print(f"compiling {len(runnable)} shapes ({sum(map(len, slices))} calls) with {len(jobs)} workers", flush=True)
    try:
        outcomes = supervise.run_all(jobs)
    finally:
        results = [records.read_json_any(work_dir / f"result-{i}.json") for i in range(len(jobs))]
        shutil.rmtree(work_dir, ignore_errors=True)
    broken: set[int] = set()
    for i, (outcome, result) in enumerate(zip(outcomes, results)):
        if outcome.returncode == 0 and result is not None:
            report.deferred += result.get("deferred", 0)
            continue
        shapes_in_slice = {s for s, _ in slices[i]}
        broken |= shapes_in_slice
        culprit = _last_shape(outcome.tail(200))
        if culprit is not None and outcome.returncode != worker.EXIT_ENV:
            key = runnable[culprit].key
            report.failures.setdefault(key, {"error": f"compile worker {outcome.describe()} (log {outcome.log})",
                                             "log_tail": outcome.tail()})
    report.complete = {w.key for s, w in enumerate(runnable) if s not in broken}
    report.compiled = _compiled_count(store) - compiled_before  # other runs' builds may count too
    report.seconds = round(time.monotonic() - started, 3)
    print(f"compiled {report.compiled} kernels in {report.seconds:.1f}s ({report.deferred} calls deferred "
          f"while another worker built their kernel)", flush=True)
    return report


def _last_shape(lines: list[str]) -> int | None:
    for line in reversed(lines):
        if line.startswith("shape ") and ":" in line:
            try:
                return int(line.split()[1].rstrip(":"))
            except ValueError:
                return None
    return None


def _compiled_count(store: Path) -> int:
    try:
        return len((store / "compiled.log").read_text().splitlines())
    except OSError:
        return 0


