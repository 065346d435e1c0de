"""H100 acceptance run for the core warm. Prints and writes one JSON result.

Two DeepSeek-V3 TP8 targets on an explicit M list of at most 16 values, on a cold cache:
  T1: tp8 (6 NORMAL shapes); T2: tp8 + dp8 dp-attention (3 shapes shared with T1, 3 own).
Steps: cold `doit warm`; a second `doit warm` (must run nothing); delete one entry only
T2 needs (only T2 may go stale, and only that entry is rebuilt); then an independent
sglang-style replay of every M of every shape (must compile 0 new entries).

Usage: python bench/warm_one_target.py --work DIR [--jobs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from tasks.host import fingerprint  # noqa: E402  (pure planning code)
from tasks.state import layouts  # noqa: E402
from tasks.plan import registry, targets

M_LIST = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def doit(env, *args) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                         env=env, capture_output=True, text=True, cwd=REPO)
    return out, round(time.monotonic() - started, 2)


def cache_entries(root: Path) -> set[str]:
    return entry_names(root)


def status(env) -> dict[str, str]:
    out, _ = doit(env, "list", "--status", "--all")
    rows = [line.split()[:2] for line in out.stdout.splitlines() if line.strip()]
    return {name: flag for flag, name in rows if name.startswith("warm:")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()

    shutil.rmtree(opts.work, ignore_errors=True)
    models, root = opts.work / "models", opts.work / "cache"
    models.mkdir(parents=True)
    header = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]
    m_line = f"m_list = {M_LIST}\n"
    (models / "deepseek-v3.toml").write_text(
        header + "\n[[launch]]\ntp = 8\n" + m_line
        + '\n[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + m_line)
    env = {**os.environ, "JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(root),
           "JITWARM_DOIT_DB": str(opts.work / "doit.db")}
    env.pop("SGLANG_DG_CACHE_DIR", None)
    planned = targets.expand(registry.load(models), environ={})
    t1, t2 = planned
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())), "m_list": M_LIST, "doit_jobs": opts.jobs,
                    "targets": {t.name: [w.name for w in t.works] for t in planned}}

    cold, cold_s = doit(env, "-n", str(opts.jobs), "warm")
    result["cold"] = {"rc": cold.returncode, "wall_s": cold_s, "entries": len(cache_entries(root)),
                      "shapes": _shape_records(root)}
    if cold.returncode != 0:
        result["cold"]["output_tail"] = (cold.stdout + cold.stderr)[-4000:]
        return emit(result, opts.out)

    again, again_s = doit(env, "warm")
    result["second_warm"] = {"rc": again.returncode, "wall_s": again_s,
                             "shapes_warmed": again.stdout.count("warmed "),
                             "all_up_to_date": set(status(env).values()) == {"U"}}

    markers = {m["target"]: m for m in map(_load, (root / "jitwarm" / "markers").glob("*.json"))}
    only_t2 = sorted(set(markers[t2.name]["entries"]) - set(markers[t1.name]["entries"]))
    victim = only_t2[0]
    shutil.rmtree(root / "cache" / victim)
    stale = [name for name, flag in status(env).items() if flag == "R"]
    info, _ = doit(env, "info", f"warm:{t2.name}")
    before = cache_entries(root)
    rewarm, rewarm_s = doit(env, "warm")
    result["delete_one_entry"] = {
        "deleted": victim, "stale_targets": stale, "expected_stale": [f"warm:{t2.name}"],
        "info_names_entry": f"entry {victim} missing" in info.stdout,
        "rewarm_rc": rewarm.returncode, "rewarm_wall_s": rewarm_s,
        "shapes_rewarmed": re.findall(r"^warmed (\S+):", rewarm.stdout, re.M),
        "entries_rebuilt": sorted(cache_entries(root) - before),
        "all_up_to_date_after": set(status(env).values()) == {"U"},
    }

    plan_file = opts.work / "replay_plan.json"
    shapes = {w.key: w for t in planned for w in t.works}
    plan_file.write_text(json.dumps({"shapes": [
        {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
         "m_values": list(w.m_values)} for w in shapes.values()]}))
    replay = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan_file)],
                            env={**env, "DG_JIT_CACHE_DIR": str(root)}, capture_output=True, text=True)
    try:
        result["replay"] = json.loads(replay.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result["replay"] = {"rc": replay.returncode, "output_tail": (replay.stdout + replay.stderr)[-4000:]}
    return emit(result, opts.out)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _shape_records(root: Path) -> list[dict]:
    rows = []
    for path in sorted((root / "jitwarm" / "shapes").glob("*.json")):
        rec = _load(path)
        rows.append({"shape": f"{rec['shape']['kind']} N={rec['shape']['n']} K={rec['shape']['k']}",
                     "ok": rec["ok"], "entries": len(rec.get("entries", {})), "new": len(rec.get("new", [])),
                     "seconds": rec.get("seconds"), "error": rec.get("error")})
    return rows


if __name__ == "__main__":
    sys.exit(main())
