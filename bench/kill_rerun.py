"""On a GPU: a `kill -9` of `doit warm`'s process group 30 s into a cold warm of
the shipped DeepSeek-V3-0324, V3.2 and GLM-5-FP8 targets, then a rerun.

Reports the processes left 3 s after the kill (found by their environment: DG_JIT_CACHE_DIR
or the shim's store under the root), the staging and the build directories under <root>/tmp
left, the rerun's wall against a cold warm measured in the same run (unless --no-cold), the
rerun's replays (they must compile 0), and what of the killed run's tmp/ the rerun left (it must be
nothing).

Usage: python bench/kill_rerun.py --work DIR [--kill-after S] [--no-cold] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

sys.path.insert(0, str(REPO))
from tasks.host import fingerprint  # noqa: E402
from tasks.state import layouts  # noqa: E402

MODELS = ("deepseek-v3-0324", "deepseek-v3.2", "glm-5-fp8")


def setup(work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    (work / "models").mkdir(parents=True)
    for name in MODELS:
        shutil.copy(REPO / "models" / f"{name}.toml", work / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "JITWARM_"))}
    env.update({"JITWARM_MODELS_DIR": str(work / "models"), "DG_JIT_CACHE_DIR": str(work / "cache"),
                "JITWARM_DOIT_DB": str(work / "doit.db"), "JITWARM_PROGRESS": "plain"})
    return env


def warm(env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "warm"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def timed(env: dict) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = warm(env)
    out, _ = proc.communicate()
    return round(time.monotonic() - started, 2), proc.returncode, out


def left(root: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter():
        try:
            e = proc.environ()
            if e.get("DG_JIT_CACHE_DIR") == str(root) or str(root) in e.get("JITWARM_KSTORE", ""):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(" ".join(proc.cmdline())[:120])
        except psutil.Error:
            continue
    return found


def tmp_names(root: Path) -> set[str]:
    tmp = root / "tmp"
    return {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()


def tmp_cubins(root: Path) -> int:
    return sum(1 for _ in (root / "tmp").glob("*/kernel.cubin")) if (root / "tmp").is_dir() else 0


def replays(root: Path) -> dict:
    recs = [json.loads(p.read_text()) for p in (root / "jitwarm" / "shapes").glob("*.json")]
    return {"shapes": len(recs), "ok": sum(r["ok"] for r in recs),
            "new_entries": sum((r.get("replay") or {}).get("new_entries", 0) for r in recs)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--kill-after", type=float, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold warm the rerun is compared with")
    opts = parser.parse_args()
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module()))}
    if not opts.no_cold:
        env = setup(opts.work / "cold")
        wall, rc, _ = timed(env)
        result["cold"] = {"wall_s": wall, "rc": rc, "replays": replays(opts.work / "cold" / "cache")}
    env = setup(opts.work / "killed")
    root = opts.work / "killed" / "cache"
    proc = warm(env, start_new_session=True)
    time.sleep(opts.kill_after)
    before = len(left(root))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    survivors = left(root)
    staging = root / "jitwarm" / "staging"
    killed_tmp = tmp_names(root)
    result["kill"] = {"after_s": opts.kill_after, "processes_before": before, "processes_left_3s_after": survivors,
                      "staging_dirs_left": sorted(p.name for p in staging.iterdir()) if staging.is_dir() else [],
                      "tmp_left": len(killed_tmp), "tmp_cubins_left": tmp_cubins(root)}
    wall, rc, out = timed(env)
    result["rerun"] = {"wall_s": wall, "rc": rc, "replays": replays(root),
                       "staging_dirs_left": sorted(p.name for p in staging.iterdir()) if staging.is_dir() else [],
                       "tmp_left": len(tmp_names(root)), "killed_runs_tmp_left": sorted(killed_tmp & tmp_names(root)),
                       "summary": [line for line in out.splitlines() if line.startswith(("compiled ", "jitwarm: "))][-3:]}
    if "cold" in result:
        result["rerun_over_cold"] = round(result["rerun"]["wall_s"] / result["cold"]["wall_s"], 3)
    result["target_met"] = (not survivors and result.get("rerun_over_cold", 0) <= 1.10 and rc == 0
                            and result["rerun"]["replays"]["new_entries"] == 0
                            and not result["rerun"]["killed_runs_tmp_left"])
    emit(result, opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
