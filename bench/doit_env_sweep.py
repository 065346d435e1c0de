"""A server started with `doit env`'s output finds every kernel of a warmed target (GPU host).

Over a root a `doit warm` already filled (e.g. bench/cold_warm_shipped.py's --work), for
each target of the models named: run `doit env warm:<target>`, start bench/sglang_replay.py (sglang
0.5.23's warmup executors, restated there, sharing no code with jitwarm) in an
environment made only of the base environment and those export lines, over the target's
shapes and M lists, and count the cache entries that appeared. Targets: the export lines
include SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 and the sweep compiles 0.

Usage: python bench/doit_env_sweep.py --work DIR [--model NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

sys.path.insert(0, str(REPO))
from tasks.host import fingerprint, gpu  # noqa: E402
from tasks.plan import registry, targets  # noqa: E402
from tasks.state import layouts  # noqa: E402

# Variables `doit env` decides; the base environment must not carry them in.
DECIDED = ("SGLANG_DG_CACHE_DIR", "SGL_DG_CACHE_DIR", "DG_JIT_CACHE_DIR", "DJ_JIT_CACHE_DIR",
           "SGLANG_JIT_DEEPGEMM_PRECOMPILE")


def exports(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            found[name] = value
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True, help="models/, cache/ and doit.db of a warmed run")
    parser.add_argument("--model", action="append", help="model names (default: every model)")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    models = opts.work / "models"
    planned = targets.expand(registry.load(models), environ={}, facts=targets.Facts(gpu_memory_mib=gpu.total_mib()))
    chosen = [t for t in planned if not opts.model or t.model in opts.model]
    if not chosen:
        sys.exit(f"doit_env_sweep: no target of {opts.model or 'any model'} in {models}; "
                 "pass the --work of a warmed run (bench/cold_warm_shipped.py --work)")
    base = {k: v for k, v in os.environ.items() if k not in DECIDED and not k.startswith("JITWARM_")}
    jitwarm_env = {**base, "JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(opts.work / "cache"),
                   "JITWARM_DOIT_DB": str(opts.work / "doit.db")}
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())),
                    "targets": {}}
    for target in chosen:
        said = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "env", f"warm:{target.name}"],
                              env=jitwarm_env, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
        exported = exports(said.stdout)
        plan = opts.work / f"{target.name}.plan.json"
        plan.write_text(json.dumps({"shapes": [
            {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
             "m_values": list(w.m_values)} for w in target.works]}))
        # The server's process: the base environment plus exactly what `doit env` printed.
        sweep = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                               env={**base, **exported}, capture_output=True, text=True, timeout=900, check=False)
        try:
            replay = json.loads(sweep.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            replay = {"error": (sweep.stdout + sweep.stderr)[-3000:]}
        result["targets"][target.name] = {
            "doit_env_rc": said.returncode, "exports": exported, "doit_env_stderr": said.stderr.strip(),
            "precompile_off": exported.get("SGLANG_JIT_DEEPGEMM_PRECOMPILE") == "0",
            "sweep": {k: replay.get(k) for k in ("shapes", "calls", "new_entries", "seconds", "error") if k in replay},
        }
    result["target_met"] = bool(chosen) and all(
        t["precompile_off"] and t["sweep"].get("new_entries") == 0 for t in result["targets"].values())
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
