"""How much does a no-op `doit warm` cost next to doit itself? (CPU only)

Warms a registry into a temporary cache with the test stand-in deep_gemm, then times,
interleaved, `doit warm` (everything up to date) against `doit list` of an empty dodo.py,
and reports medians and their ratio. Targets: ratio <= 1.5, with and without bytecode;
at most 0.5 ms per target at 1000 targets.

- "bytecode": jitwarm's modules have their __pycache__, as after any earlier run.
- "no bytecode": jitwarm runs from a copy of its sources without __pycache__ and with
  PYTHONDONTWRITEBYTECODE=1 (a fresh read-only checkout), so every run compiles them;
  doit and the standard library keep their installed bytecode in both runs.
- scaling: the shipped planned models copied into 100 and 1000 model files (each keeps its
  one launch, so targets share shapes as real fleets' do); per target = the difference
  of the two no-op medians over the 900 extra targets.
- "planned": the same no-op with JITWARM_NOOP_STAMP=off, timed in the same loop: what a
  no-op costs when it plans (the first after any change, or on a terminal's live display)
  rather than answering from the last no-op's stamp (tasks/cli/noop.py).

Usage: python bench/noop_overhead.py [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

FAKES = REPO / "tests" / "fakes"
SCALES = (100, 1000)


def timed(argv: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def empty_dodo(directory: Path) -> Path:
    """A dodo.py with one task that does nothing: `doit list` of it is doit's own start."""
    directory.mkdir(parents=True, exist_ok=True)
    dodo = directory / "dodo.py"
    dodo.write_text("def task_nothing():\n    return {'actions': []}\n")
    return dodo


def source_copy(dest: Path) -> Path:
    """jitwarm's sources without bytecode, importable from `dest`."""
    shutil.copytree(REPO / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dodo.py", dest / "dodo.py")
    return dest


def measure(models: Path, work: Path, runs: int, bytecode: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    code = REPO if bytecode else source_copy(work / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "DG_JIT_", "JITWARM_"))}
    env.update({"JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(work / "cache"),
                "JITWARM_DEEP_GEMM_MODULE": "fake_deep_gemm", "DG_JIT_NVCC_COMPILER": str(FAKES / "fake_nvcc"),
                "PYTHONPATH": os.pathsep.join([str(FAKES), str(code)]), "JITWARM_DOIT_DB": str(work / "doit.db")})
    doit = [sys.executable, "-m", "doit"]
    warm = doit + ["-f", str(code / "dodo.py"), "warm"]
    first = subprocess.run(warm, env=env, cwd=code, capture_output=True, text=True, check=False)
    if first.returncode != 0:
        raise SystemExit(f"the first warm failed:\n{first.stdout[-2000:]}{first.stderr[-2000:]}")
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        shutil.rmtree(code / "tasks" / "__pycache__", ignore_errors=True)
        for cached in (code / "tasks").rglob("__pycache__"):
            shutil.rmtree(cached)
    again = subprocess.run(warm, env=env, cwd=code, capture_output=True, text=True, check=False)
    if again.returncode != 0 or " 0 rebuilt" not in again.stdout + again.stderr:
        raise SystemExit(f"the second warm was not a no-op:\n{again.stdout[-2000:]}{again.stderr[-2000:]}")
    empty = empty_dodo(work / "empty").parent
    noop, planned, baseline = [], [], []
    off = {**env, "JITWARM_NOOP_STAMP": "off"}
    for _ in range(runs):
        noop.append(timed(warm, env, code))
        planned.append(timed(warm, off, code))
        baseline.append(timed(doit + ["-f", str(empty / "dodo.py"), "list"], env, empty))
    if not bytecode:
        assert not list((code / "tasks").rglob("*.pyc")), "bytecode was written"
    stamped = (Path(env["JITWARM_DOIT_DB"] + ".noop")).exists()
    med_noop, med_planned, med_base = map(statistics.median, (noop, planned, baseline))
    return {"noop_warm_s": round(med_noop, 4), "empty_list_s": round(med_base, 4),
            "ratio": round(med_noop / med_base, 3), "stamp_saved": stamped,
            "planned_noop_warm_s": round(med_planned, 4), "planned_ratio": round(med_planned / med_base, 3),
            "runs": runs}


def copies(planned: list[Path], count: int, dest: Path) -> Path:
    """`count` model files, round-robin copies of the planned ones under distinct names."""
    dest.mkdir(parents=True)
    for i in range(count):
        source = planned[i % len(planned)]
        shutil.copy(source, dest / f"{source.stem}-copy{i:04d}.toml")
    return dest


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jitwarm-noop-"))
    planned = [p for p in sorted((REPO / "models").glob("*.toml")) if "config_source" not in p.read_text()]
    scaled = {n: measure(copies(planned, n, work / f"models-{n}"), work / f"scale-{n}", max(5, opts.runs // 3))
              for n in SCALES}
    low, high = SCALES
    per_target_ms = (scaled[high]["noop_warm_s"] - scaled[low]["noop_warm_s"]) / (high - low) * 1000
    planned_ms = (scaled[high]["planned_noop_warm_s"] - scaled[low]["planned_noop_warm_s"]) / (high - low) * 1000
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "shipped_registry": {"bytecode": measure(REPO / "models", work / "bc", opts.runs),
                             "no_bytecode": measure(REPO / "models", work / "nobc", opts.runs, bytecode=False)},
        "scaling": {**{f"targets_{n}": scaled[n] for n in SCALES},
                    "per_target_ms": round(per_target_ms, 3), "planned_per_target_ms": round(planned_ms, 3),
                    "goal_per_target_ms": 0.5},
        "goal_ratio": 1.5,
    }
    shutil.rmtree(work, ignore_errors=True)
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
