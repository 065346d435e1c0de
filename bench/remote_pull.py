"""Remote cache on a GPU host (issue 6): a fresh cache pulling a complete remote set,
against a cold compile of the same shapes, side by side in one run. Prints one JSON result.

The shipped registry's planned targets (DeepSeek-V3-0324, DeepSeek-V3.2, GLM-5-FP8 at TP8,
default M lists). Steps, each a `doit` subprocess timed by wall clock:
  cold   `doit warm` into empty root A, no remote
  push   `doit push` from A to a file:// remote (read-write)
  pull   `doit warm` into empty root B from the remote (read mode), twice (B, C)
The remote lives on the same host's disk, so the pull wall excludes network time; the
result gives the artifact bytes to add a network's transfer time. torch is imported once
before the cold run (page cache), and whether its modules are byte-compiled is recorded:
each step imports torch once, which takes seconds longer without .pyc files.

Usage: python bench/remote_pull.py --work DIR [--out FILE]
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

MODELS = ("deepseek-v3-0324.toml", "deepseek-v3.2.toml", "glm-5-fp8.toml")


def doit(env, timeout: float, *args) -> tuple[subprocess.CompletedProcess | None, float]:
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args], env=env,
                             capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        out = None
    return out, round(time.monotonic() - started, 2)


def phase(work: Path, name: str, env: dict, timeout: float, *args) -> dict:
    report = work / f"{name}.report.json"
    out, wall = doit({**env, "JITWARM_REPORT_JSON": str(report)}, timeout, *args)
    (work / f"{name}.log").write_text((out.stdout + out.stderr) if out else "timed out")
    result = {"rc": out.returncode if out else "timeout", "wall_s": wall}
    if report.exists():
        data = json.loads(report.read_text())
        result["totals"] = data["totals"]
        result["fingerprint"] = data["fingerprint"]
    if out is not None:  # the pool's own account: phases, torch import, replays
        result["pool"] = next((line for line in out.stdout.splitlines() if line.startswith("compiled ")), None)
    if out is not None and out.returncode != 0:
        result["output_tail"] = (out.stdout + out.stderr)[-3000:]
    return result


def replay_new_entries(root: Path) -> int:
    total = 0
    for path in (root / "jitwarm" / "shapes").glob("*.json"):
        total += json.loads(path.read_text()).get("replay", {}).get("new_entries", 0)
    return total


def torch_bytecode() -> dict:
    """Whether torch's modules are byte-compiled: without .pyc files (and with
    PYTHONDONTWRITEBYTECODE set) every `import torch` compiles them, taking seconds."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    where = Path(spec.origin).parent if spec and spec.origin else None
    return {"pyc_files": len(list(where.rglob("*.pyc"))) if where else None,
            "py_files": len(list(where.rglob("*.py"))) if where else None,
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cold-timeout", type=float, default=420)
    opts = parser.parse_args()

    shutil.rmtree(opts.work, ignore_errors=True)
    models, remote = opts.work / "models", opts.work / "remote"
    models.mkdir(parents=True)
    for name in MODELS:
        shutil.copy(REPO / "models" / name, models / name)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("JITWARM_REMOTE", "JITWARM_REPORT", "JITWARM_JUNIT", "JITWARM_SHARD", "SGLANG_DG_"))}
    base.update(JITWARM_MODELS_DIR=str(models), JITWARM_PROGRESS="plain")

    def env(root: str, **extra) -> dict:
        return {**base, "DG_JIT_CACHE_DIR": str(opts.work / root), "JITWARM_DOIT_DB": str(opts.work / f"{root}.db"),
                **extra}

    pulling = {"JITWARM_REMOTE": f"file://{remote}", "JITWARM_REMOTE_MODE": "read"}
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "models": list(MODELS),
                    "torch_bytecode": torch_bytecode()}
    # Read torch's files into the page cache first, so the cold run is not also the first
    # to load them from disk (the pulls come later and would find them cached).
    subprocess.run([sys.executable, "-c", "import torch"], check=True, timeout=300)
    result["cold"] = phase(opts.work, "cold", env("a"), opts.cold_timeout, "warm")
    result["cold"]["entries"] = len(entry_names(opts.work / "a"))
    result["push"] = phase(opts.work, "push", env("a", JITWARM_REMOTE=f"file://{remote}",
                                                  JITWARM_REMOTE_MODE="read-write"), 120, "push")
    result["push"]["artifacts"] = len(list(remote.glob("jitwarm/v1/*/*/manifest.json")))
    result["push"]["bytes"] = sum(p.stat().st_size for p in remote.rglob("*") if p.is_file())
    for name in ("b", "c"):
        pulled = phase(opts.work, f"pull-{name}", env(name, **pulling), 120, "warm")
        pulled["replay_new_entries"] = replay_new_entries(opts.work / name)
        pulled["entries"] = len(entry_names(opts.work / name))
        stale, _ = doit(env(name), 60, "list", "--status", "--all")
        rows = [line.split()[:2] for line in (stale.stdout if stale else "").splitlines()]
        pulled["stale_after"] = sum(len(r) == 2 and r[0] == "R" and r[1].startswith("warm:") for r in rows)
        result[f"pull_{name}"] = pulled
    cold = result["cold"]["wall_s"]
    walls = [result[f"pull_{n}"]["wall_s"] for n in ("b", "c")]
    result["ratio_pull_to_cold"] = [round(w / cold, 4) for w in walls]
    result["target_ratio"] = 0.05
    fp = result["cold"].get("fingerprint", {})
    result["gpu"] = fp.get("gpu.name")
    result["versions"] = {k: fp.get(k) for k in ("deep_gemm.dist", "deep_gemm.version", "torch", "nvcc", "python")}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
