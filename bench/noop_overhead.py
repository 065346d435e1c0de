"""How much does a no-op `doit warm` cost next to doit itself? (issue 4, CPU only)

Warms the shipped registry's planned targets into a temporary cache with the test
stand-in deep_gemm, then times, interleaved, `doit warm` (nothing stale but the fallback
targets, which fail at once without sglang) against `doit list` of an empty dodo.py.
Reports medians and their ratio, with and without the fallback targets. Target: <= 1.5.

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


def timed(argv: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(models: Path, work: Path, runs: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "DG_JIT_", "JITWARM_"))}
    env.update({"JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(work / "cache"),
                "JITWARM_DEEP_GEMM_MODULE": "fake_deep_gemm", "DG_JIT_NVCC_COMPILER": str(FAKES / "fake_nvcc"),
                "PYTHONPATH": os.pathsep.join([str(FAKES), str(REPO)]), "JITWARM_DOIT_DB": str(work / "doit.db")})
    doit = [sys.executable, "-m", "doit"]
    subprocess.run(doit + ["-f", str(REPO / "dodo.py"), "warm"], env=env, cwd=REPO, capture_output=True)
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    (empty / "dodo.py").write_text("def task_nothing():\n    return {'actions': []}\n")
    noop, baseline = [], []
    for _ in range(runs):
        noop.append(timed(doit + ["-f", str(REPO / "dodo.py"), "warm"], env, REPO))
        baseline.append(timed(doit + ["-f", str(empty / "dodo.py"), "list"], env, empty))
    med_noop, med_base = statistics.median(noop), statistics.median(baseline)
    return {"noop_warm_s": round(med_noop, 4), "empty_list_s": round(med_base, 4),
            "ratio": round(med_noop / med_base, 3), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jitwarm-noop-"))
    planned = work / "planned-models"
    planned.mkdir()
    for path in (REPO / "models").glob("*.toml"):
        if "config_source" not in path.read_text():  # the planned (not fallback) models
            shutil.copy(path, planned / path.name)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "shipped_registry": measure(REPO / "models", work / "all", opts.runs),
        "planned_targets_only": measure(planned, work / "planned", opts.runs),
    }
    shutil.rmtree(work, ignore_errors=True)
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
