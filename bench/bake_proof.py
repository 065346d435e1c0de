"""A bake on a host with no GPU visible, then a pull and proof on the GPU, in one run.

From a models directory holding kernel locks (`doit lock`, e.g. the one bench/kernel_queue.py
leaves in <work>/models):
  1. bake: an empty root, nvidia-smi made to fail and CUDA_VISIBLE_DEVICES empty, so the host
     declares its GPU (JITWARM_GPU); `doit warm` compiles the locked sources with nvcc alone and
     pushes them, unproven, to a file:// remote;
  2. proof: another empty root on the GPU pulls them and replays every shape.
Targets: the bake compiles every locked kernel; the proof compiles 0 and every target ends up to date.

Usage: python bench/bake_proof.py --models DIR --work DIR --gpu sm90:132 [--out FILE]
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


def warm(root: Path, models: Path, **env_extra) -> dict:
    keep = ("JITWARM_DEEP_GEMM_MODULE", "JITWARM_CACHE_LAYOUT")  # a CPU trial through the stand-ins
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "JITWARM_")) or k in keep}
    env.update({"JITWARM_MODELS_DIR": str(models), "DG_JIT_CACHE_DIR": str(root),
                "JITWARM_DOIT_DB": str(root.parent / f"{root.name}.db"), **env_extra})
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "warm"], env=env,
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    shapes = [json.loads(p.read_text()) for p in (root / "jitwarm" / "shapes").glob("*.json")]
    logs = list((root / "jitwarm" / "kstore").glob("*/compiled.log"))
    return {"rc": out.returncode, "wall_s": round(time.monotonic() - started, 2), "entries": len(entry_names(root)),
            "kernels_compiled": sum(len(p.read_text().splitlines()) for p in logs),
            "shapes": len(shapes), "ok": sum(s["ok"] for s in shapes), "baked": sum(s.get("baked", False) for s in shapes),
            "replay_new_entries": sum((s.get("replay") or {}).get("new_entries", 0) for s in shapes),
            "discovery_fallbacks": out.stdout.count("warming it by discovery"),
            "lines": [line for line in out.stdout.splitlines()
                      if re.match(r"(baking|baked|remote|compiling|compiled|jitwarm: \d)", line)],
            "output_tail": (out.stdout + out.stderr)[-1500:] if out.returncode and "baked" not in out.stdout else ""}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--gpu", default="sm90:132", help="what the GPU-less host declares (JITWARM_GPU)")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    blind = opts.work / "no-gpu-bin"
    blind.mkdir(parents=True)
    (blind / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    (blind / "nvidia-smi").chmod(0o755)
    remote = f"file://{opts.work / 'remote'}"
    locks = sorted(p.name for p in opts.models.glob("*.kernels.json"))
    bake = warm(opts.work / "bake", opts.models, PATH=f"{blind}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="",
                JITWARM_GPU=opts.gpu, JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE="read-write",
                JITWARM_STAND_IN_GPU="none")  # the stand-ins' own "no GPU"; the real deep_gemm ignores it
    print(json.dumps(bake), flush=True)
    proof = warm(opts.work / "gpu", opts.models, JITWARM_REMOTE=remote)
    print(json.dumps(proof), flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "locks": locks,
              "declared": opts.gpu, "bake_no_gpu": bake, "proof_on_gpu": proof,
              "targets_met": {"bake_built_every_entry": bake["baked"] == bake["shapes"] > 0,
                              "proof_compiled_0": proof["kernels_compiled"] == 0 and proof["replay_new_entries"] == 0
                              and not proof["discovery_fallbacks"],
                              "proof_all_ok": proof["rc"] == 0 and proof["ok"] == proof["shapes"] == bake["shapes"]}}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
