"""A no-op `doit warm` on a GPU host, over a root `bench/cold_warm_shipped.py` warmed.

Times, interleaved in one loop, `doit warm` with everything up to date three ways, and an
empty `doit list` (doit's own start):
- "asked": no stamp and no kept tool answers (JITWARM_NOOP_STAMP=off,
  JITWARM_HOST_CACHE=off): nvcc --version, nvidia-smi twice and a CUDA driver probe on
  every run, as before 2026-12-02;
- "planned": no stamp, kept answers (tasks/host/hostcache.py): the planner runs;
- "stamped": the default: the last no-op's stamp answers (tasks/cli/noop.py).

Usage: python bench/noop_gpu.py --work DIR [--runs N] [--out FILE]   (DIR: cold_warm_shipped's --work)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402
from noop_overhead import empty_dodo, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SGLANG_", "JITWARM_")) or k == "JITWARM_DEEP_GEMM_MODULE"}  # the test seam
    env.update({"JITWARM_MODELS_DIR": str(opts.work / "models"), "DG_JIT_CACHE_DIR": str(opts.work / "cache"),
                "JITWARM_DOIT_DB": str(opts.work / "doit.db"), "JITWARM_HOST_CACHE": str(opts.work / "host-cache")})
    warm = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "warm"]
    first = subprocess.run(warm, env=env, cwd=REPO, capture_output=True, text=True)
    if first.returncode != 0 or " 0 rebuilt" not in first.stdout:
        raise SystemExit(f"not a no-op:\n{first.stdout[-2000:]}{first.stderr[-2000:]}")
    empty = empty_dodo(Path(tempfile.mkdtemp())).parent
    ways = {"asked": {**env, "JITWARM_NOOP_STAMP": "off", "JITWARM_HOST_CACHE": "off"},
            "planned": {**env, "JITWARM_NOOP_STAMP": "off"}, "stamped": env}
    times: dict[str, list[float]] = {name: [] for name in [*ways, "empty_list"]}
    for _ in range(opts.runs):
        for name, way in ways.items():
            times[name].append(timed(warm, way, REPO))
        times["empty_list"].append(timed([sys.executable, "-m", "doit", "-f", str(empty / "dodo.py"), "list"],
                                         env, empty))
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["empty_list"]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": opts.runs,
              "stamp_saved": Path(env["JITWARM_DOIT_DB"] + ".noop").exists(),
              "median_s": {name: round(v, 4) for name, v in med.items()},
              "ratio_to_empty_list": {name: round(med[name] / base, 3) for name in ways},
              "no_op_output": first.stdout.splitlines()[-1]}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
