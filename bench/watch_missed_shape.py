"""On a GPU: `doit watch` names a shape a warm missed, and --record closes it.

On a GPU host with the real deep_gemm, in a fresh registry and cache root:
  1. `doit warm` of DeepSeek-V3-0324 at tp 8 (its plan has no grouped shape);
  2. `doit watch --fail --record <target> -- python bench/sglang_replay.py plan.json`, where the
     plan is one MASKED shape the target lacks, swept by sglang 0.5.23's executor as
     bench/sglang_replay.py restates it (no jitwarm code); the report must name its N and K;
  3. `doit warm` into a new, empty cache root (a fresh runner: the watched run's own
     compiles do not count), which must build the recorded shape;
  4. the same watch on that root, which must see 0 compiles.

Usage: python bench/watch_missed_shape.py --work DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _emit import emit

REPO = Path(__file__).resolve().parent.parent
MISSED = {"kind": "GROUPED_GEMM_NT_F8F8BF16_MASKED", "n": 4096, "k": 7168, "groups": 32,
          "m_values": [1, 64, 256, 1024]}  # inside the target's M list: the rewarm covers them
MISSED_TEXT = "GROUPED_GEMM_NT_F8F8BF16_MASKED N=4096 K=7168 num_groups=32"
LAUNCH = "[[launch]]\ntp = 8\nm_list = [1, 64, 256, 1024]\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = args.work.resolve()
    models, root = work / "models", work / "cache"
    models.mkdir(parents=True)
    header = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]
    (models / "v3.toml").write_text(header + "\n" + LAUNCH)
    plan = work / "plan.json"
    plan.write_text(json.dumps({"shapes": [MISSED]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "SGL_", "DG_JIT_", "JITWARM_"))}
    env.update({"JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(root),
                "JITWARM_DOIT_DB": str(work / "doit.db"), "JITWARM_PROGRESS": "plain"})

    def doit(*argv, report=None, timeout=900):
        began = time.monotonic()
        extra = {"JITWARM_WATCH_REPORT_JSON": str(report)} if report else {}
        out = subprocess.run([sys.executable, "-m", "doit", *argv], cwd=REPO, env={**env, **extra},
                             capture_output=True, text=True, timeout=timeout)
        (work / f"{argv[0]}-{int(began * 1000)}.log").write_text(out.stdout + out.stderr)
        return out, round(time.monotonic() - began, 2)

    steps = {}
    out, seconds = doit("warm")
    steps["warm"] = {"rc": out.returncode, "seconds": seconds}
    target = next(line.split()[1] for line in doit("list", "--status")[0].stdout.splitlines()
                  if line.split()[1:2] and line.split()[1].startswith("warm:v3@")).removeprefix("warm:")
    replay = [sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)]
    first = work / "watch-1.json"
    out, seconds = doit("watch", "--fail", "--record", target, "--", *replay, report=first)
    report1 = json.loads(first.read_text())
    steps["watch"] = {"rc": out.returncode, "seconds": seconds, "summary": out.stderr.strip().splitlines()[-1],
                      "entries": [{k: e[k] for k in ("name", "kind", "n", "k", "groups", "note", "seconds")}
                                  for e in report1["entries"]],
                      "missed_shapes": report1["missed_shapes"], "recorded": report1["recorded"]}
    env.update({"DG_JIT_CACHE_DIR": str(work / "fresh"), "JITWARM_DOIT_DB": str(work / "fresh.db")})
    out, seconds = doit("warm")
    steps["rewarm"] = {"rc": out.returncode, "seconds": seconds, "root": env["DG_JIT_CACHE_DIR"],
                       "summary": [line for line in out.stdout.splitlines() if "kernels compiled" in line][-1:]}
    second = work / "watch-2.json"
    out, seconds = doit("watch", "--fail", "--", *replay, report=second)
    report2 = json.loads(second.read_text())
    steps["watch_again"] = {"rc": out.returncode, "seconds": seconds, "entries": len(report2["entries"]),
                            "summary": out.stderr.strip().splitlines()[-1]}
    named = MISSED_TEXT in report1["missed_shapes"]
    result = {
        "bench": "watch_missed_shape", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": _gpu(), "fingerprint": _fingerprint(root), "target": target, "missed": MISSED_TEXT, "steps": steps,
        "lock": (models / "v3.lock.toml").read_text() if (models / "v3.lock.toml").exists() else None,
        "acceptance": {"named_n_and_k": named, "watch_failed_under_fail": steps["watch"]["rc"] == 1,
                       "recorded": MISSED_TEXT in (report1["recorded"] or {}).get("added", []),
                       "rewarm_ok": steps["rewarm"]["rc"] == 0,
                       "rewarm_built_it": _warmed(work / "fresh", MISSED),
                       "watch_again_compiled_0": steps["watch_again"]["entries"] == 0 and steps["watch_again"]["rc"] == 0},
    }
    result["acceptance"]["all"] = all(result["acceptance"].values())
    return emit(result, args.out)


def _gpu() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _warmed(root: Path, shape: dict) -> bool:
    """Whether the root's marker holds the shape with its entries."""
    for path in (root / "jitwarm" / "markers").glob("*.json"):
        for s in json.loads(path.read_text()).get("shapes", []):
            if (s.get("kind"), s.get("n"), s.get("k"), s.get("groups")) == \
                    (shape["kind"], shape["n"], shape["k"], shape["groups"]) and s.get("entries"):
                return True
    return False


def _fingerprint(root: Path) -> dict | None:
    """The toolchain the warm recorded in its marker (versions of deep_gemm, torch, nvcc, the GPU)."""
    for path in sorted((root / "jitwarm" / "markers").glob("*.json")):
        return json.loads(path.read_text()).get("fingerprint")
    return None


if __name__ == "__main__":
    sys.exit(main())
