"""jitwarm's parallel cold warm against sglang's sequential sweep.

All legs in one run, each on a cold cache:
  (a) sglang-style sequential sweeps in one process (bench/sglang_replay.py) of the
      DeepSeek-V3 TP8 NORMAL shapes 7168x2048, 2112x7168, 3072x1536, 4096x512 over the
      FAST M list (chunked prefill 16384: 3072 values);
  (b) `doit warm` of a target whose plan is exactly those shapes and M lists;
  (c) (a)'s sweeps replayed over (b)'s cache.
Targets: (b) <= 1/8 of (a); identical entry sets; (c) compiles 0 new entries.

Usage: python bench/parallel_vs_sglang.py --work DIR [--out FILE]
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
from _measure import BusyCores, nvcc_profile  # noqa: E402
sys.path.insert(0, str(REPO))

from tasks.host import fingerprint  # noqa: E402  (pure planning code)
from tasks.state import layouts  # noqa: E402
from tasks.plan import registry, targets

SHAPES = [(7168, 2048), (2112, 7168), (3072, 1536), (4096, 512)]


def entries(root: Path) -> set[str]:
    return entry_names(root)


def replay(plan: Path, root: Path, env: dict) -> tuple[dict, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                         env={**env, "DG_JIT_CACHE_DIR": str(root)}, capture_output=True, text=True)
    wall = round(time.monotonic() - started, 2)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1]), wall
    except (ValueError, IndexError):
        return {"rc": out.returncode, "output_tail": (out.stdout + out.stderr)[-3000:]}, wall


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-a", action="store_true", help="exploration only: no (a), so no ratio")
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    models = opts.work / "models"
    models.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "JITWARM_"))}

    # A target whose plan is exactly the four attention shapes: V3's config without dense
    # layers (its routed experts run on Triton and the shared expert is fused into them).
    header = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]
    header = header.replace("first_k_dense_replace = 3", "first_k_dense_replace = 0")
    (models / "v3-attention.toml").write_text(
        header + '\n[[launch]]\ntp = 8\nargs = ["--chunked-prefill-size", "16384"]\nm_list = "fast"\n')
    [target] = targets.expand(registry.load(models), environ={})
    planned = sorted((w.shape.n, w.shape.k) for w in target.works)
    assert planned == sorted(SHAPES), planned
    plan = opts.work / "plan.json"
    plan.write_text(json.dumps({"shapes": [
        {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
         "m_values": list(w.m_values)} for w in target.works]}))

    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())), "cpu_cores": os.cpu_count(),
                    "shapes": [f"{n}x{k}" for n, k in SHAPES], "m_values_per_shape": len(target.works[0].m_values)}

    root_a, root_b = opts.work / "cache-a", opts.work / "cache-b"
    a, a_wall = ({"skipped": True}, 0.0) if opts.skip_a else replay(plan, root_a, env)
    result["a_sglang_sequential"] = {"wall_s": a_wall, "in_loop_s": a.get("seconds"),
                                     "entries": len(entries(root_a)), "calls": a.get("calls"),
                                     **({} if "new" in a else {"error": a})}

    doit_env = {**env, "JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(root_b),
                "JITWARM_DOIT_DB": str(opts.work / "doit.db")}
    sampler = BusyCores()
    started, started_at = time.monotonic(), time.time()
    b = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "warm"], env=doit_env,
                       capture_output=True, text=True, cwd=REPO)
    b_wall = round(time.monotonic() - started, 2)
    busy = sampler.stop()
    logs = list((root_b / "jitwarm").rglob("compiled.log"))
    records = [json.loads(p.read_text()) for p in sorted((root_b / "jitwarm" / "shapes").glob("*.json"))]
    result["b_jitwarm_cold"] = {
        "rc": b.returncode, "wall_s": b_wall, "entries": len(entries(root_b)),
        "pool": records[0].get("pool") if records else None,
        "shapes": [{"shape": f"{r['shape']['n']}x{r['shape']['k']}", "ok": r["ok"],
                    "entries": len(r.get("entries", {})), "replay": r.get("replay"), "error": r.get("error")}
                   for r in records],
        "nvcc_profile": nvcc_profile(logs, os.cpu_count() or 1, started_at),
        "busy_cores": busy,
        "output_tail": (b.stdout + b.stderr)[-2500:],
    }
    result["identical_entry_sets"] = None if opts.skip_a else entries(root_a) == entries(root_b)
    result["entries_only_in_a"] = sorted(entries(root_a) - entries(root_b))
    result["entries_only_in_b"] = sorted(entries(root_b) - entries(root_a))

    c, c_wall = replay(plan, root_b, env) if b.returncode == 0 else ({"skipped": "b failed"}, 0.0)
    result["c_replay_over_b"] = {"wall_s": c_wall, "new_entries": c.get("new_entries"), "calls": c.get("calls")}
    result["ratio_b_over_a"] = round(b_wall / a_wall, 4) if a_wall else None
    result["target_met"] = bool(result["ratio_b_over_a"] is not None and result["ratio_b_over_a"] <= 1 / 8
                                and result["identical_entry_sets"] and c.get("new_entries") == 0)
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
