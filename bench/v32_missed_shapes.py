"""The two DeepSeek-V3.2 shapes the planner used to miss, side by side in one run.

A V3.2 server (--dp 8 --enable-dp-attention) runs its unfused shared expert as NORMAL
512x7168 and 7168x256. Steps, each timed:
  1. sglang's start-up sweep of those two shapes (every M, bench/sglang_replay.py) on a cold
     cache: what a server paid at start when jitwarm had not warmed them;
  2. a cold `doit warm` of the shipped V3.2 target into a second cache;
  3. the same sweep over the warmed cache (must compile 0 new entries), then over all ten shapes.
Prints and writes one JSON result.

Usage: python bench/v32_missed_shapes.py --work DIR [--jobs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit, entry_names  # noqa: E402

sys.path.insert(0, str(REPO))
from tasks.host import fingerprint, gpu  # noqa: E402  (pure planning code)
from tasks.state import layouts  # noqa: E402
from tasks.plan import registry, targets  # noqa: E402

MISSED = {(512, 7168), (7168, 256)}


def sweep(works, root: Path, scratch: Path) -> dict:
    plan = scratch / f"sweep-{len(works)}.json"
    plan.write_text(json.dumps({"shapes": [
        {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
         "m_values": list(w.m_values)} for w in works]}))
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                         env={**os.environ, "DG_JIT_CACHE_DIR": str(root)}, capture_output=True, text=True)
    wall = round(time.monotonic() - started, 2)
    try:
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}
    except (ValueError, IndexError):
        return {"rc": out.returncode, "wall_s": wall, "output_tail": (out.stdout + out.stderr)[-4000:]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()

    shutil.rmtree(opts.work, ignore_errors=True)
    models, cold_root, warm_root = opts.work / "models", opts.work / "cold", opts.work / "warm"
    models.mkdir(parents=True)
    shutil.copy(REPO / "models" / "deepseek-v3.2.toml", models)
    [target] = targets.expand(registry.load(models), environ={},
                              facts=targets.Facts(gpu_memory_mib=gpu.total_mib()))
    missed = [w for w in target.works if (w.shape.n, w.shape.k) in MISSED]
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())), "gpu_memory_mib": gpu.total_mib(),
                    "target": target.name, "m_policy": target.m_policy.describe(),
                    "shapes": [w.name for w in target.works], "missed": [w.name for w in missed]}

    result["server_sweep_of_missed_cold"] = sweep(missed, cold_root, opts.work)

    env = {**os.environ, "JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(warm_root),
           "JITWARM_DOIT_DB": str(opts.work / "doit.db")}
    env.pop("SGLANG_DG_CACHE_DIR", None)
    started = time.monotonic()
    warm = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "-n", str(opts.jobs), "warm"],
                          env=env, capture_output=True, text=True, cwd=REPO)
    result["doit_warm"] = {"rc": warm.returncode, "wall_s": round(time.monotonic() - started, 2),
                           "entries": len(entry_names(warm_root)), "doit_jobs": opts.jobs}
    if warm.returncode != 0:
        result["doit_warm"]["output_tail"] = (warm.stdout + warm.stderr)[-4000:]
        return emit(result, opts.out)

    result["server_sweep_of_missed_warm"] = sweep(missed, warm_root, opts.work)
    result["server_sweep_of_all_warm"] = sweep(target.works, warm_root, opts.work)
    cold, hot = result["server_sweep_of_missed_cold"], result["server_sweep_of_missed_warm"]
    if cold.get("seconds") and hot.get("seconds"):
        result["missed_sweep_cold_over_warm"] = round(cold["seconds"] / hot["seconds"], 2)
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
