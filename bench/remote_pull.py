"""Remote cache on a GPU host (issues 6, 15): a fresh cache pulling a complete remote set,
against a cold compile of the same shapes, side by side in one run. Prints one JSON result.

The shipped registry's planned targets (DeepSeek-V3-0324, DeepSeek-V3.2, GLM-5-FP8 at TP8,
default M lists). Steps, each a `doit` subprocess timed by wall clock:
  cold      `doit warm` into empty root A, no remote
  push      `doit push` from A to a file:// remote (read-write); manifests carry A's proof
  pull      `doit warm` into empty root B from the remote (read mode), default verification,
            with torch poisoned (importing it raises), so success proves no torch import
  replay    the same into root C with JITWARM_VERIFY=replay (the GPU replay of before)
  declared  the same into root D as a host without a GPU would: nvidia-smi off PATH,
            CUDA_VISIBLE_DEVICES empty, JITWARM_GPU=H200, torch poisoned; then, with the
            GPU back, `doit list` must find D up to date and bench/sglang_replay.py
            (sglang's executors, not jitwarm's) must compile 0 over DeepSeek-V3-0324 in D
The remote lives on the same host's disk, so the pull wall excludes network time; the
result gives the artifact bytes to add a network's transfer time. torch is imported once
before the cold run (page cache), and whether its modules are byte-compiled is recorded:
each step imports torch once, which takes seconds longer without .pyc files.

Usage: python bench/remote_pull.py --work DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
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
        total += (json.loads(path.read_text()).get("replay") or {}).get("new_entries", 0)
    return total


def torch_bytecode() -> dict:
    """Whether torch's modules are byte-compiled: without .pyc files (and with
    PYTHONDONTWRITEBYTECODE set) every `import torch` compiles them, taking seconds."""
    spec = importlib.util.find_spec("torch")
    where = Path(spec.origin).parent if spec and spec.origin else None
    return {"pyc_files": len(list(where.rglob("*.pyc"))) if where else None,
            "py_files": len(list(where.rglob("*.py"))) if where else None,
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}


def sglang_sweep(work: Path, root: Path, models: Path, base: dict) -> dict:
    """bench/sglang_replay.py over DeepSeek-V3-0324's shapes in `root`, on this host's GPU."""
    sys.path.insert(0, str(REPO))
    from tasks.host import gpu
    from tasks.plan import registry, targets

    planned = targets.expand(registry.load(models), environ={}, facts=targets.Facts(gpu_memory_mib=gpu.total_mib()))
    target = next(t for t in planned if t.model == "deepseek-v3-0324")
    plan = work / "v3-0324.plan.json"
    plan.write_text(json.dumps({"shapes": [
        {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
         "m_values": list(w.m_values)} for w in target.works]}))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                         env={**base, "DG_JIT_CACHE_DIR": str(root)}, capture_output=True, text=True,
                         timeout=600, check=False)
    try:
        found = json.loads(out.stdout.strip().splitlines()[-1])
        return {k: found[k] for k in ("shapes", "calls", "new_entries", "seconds")}
    except (IndexError, ValueError, KeyError):
        return {"error": (out.stdout + out.stderr)[-3000:]}


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
    subprocess.run([sys.executable, "-c", "import torch"], check=False, timeout=300)
    result["cold"] = phase(opts.work, "cold", env("a"), opts.cold_timeout, "warm")
    result["cold"]["entries"] = len(entry_names(opts.work / "a"))
    result["push"] = phase(opts.work, "push", env("a", JITWARM_REMOTE=f"file://{remote}",
                                                  JITWARM_REMOTE_MODE="read-write"), 120, "push")
    result["push"]["artifacts"] = len(list(remote.glob("jitwarm/v1/*/*/manifest.json")))
    result["push"]["bytes"] = sum(p.stat().st_size for p in remote.rglob("*") if p.is_file())
    poison = opts.work / "poison"
    (poison / "torch").mkdir(parents=True)
    (poison / "torch" / "__init__.py").write_text("raise ImportError('torch imported during a proven pull')\n")
    # The fingerprint reads torch.version.cuda from the file, never importing: keep the real file.
    real = importlib.util.find_spec("torch")
    if real and real.origin:
        shutil.copy(Path(real.origin).parent / "version.py", poison / "torch" / "version.py")
    poisoned = {"PYTHONPATH": os.pathsep.join(filter(None, [str(poison), base.get("PYTHONPATH")]))}
    no_gpu_bin = opts.work / "no-gpu-bin"  # a PATH without nvidia-smi; nvcc stays found through CUDA_HOME
    no_gpu_bin.mkdir()
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    no_gpu = {"PATH": str(no_gpu_bin), "CUDA_VISIBLE_DEVICES": "", "JITWARM_GPU": "H200",
              "CUDA_HOME": base.get("CUDA_HOME") or str(Path(nvcc).resolve().parent.parent)}
    legs = {"b": {**pulling, **poisoned}, "c": {**pulling, "JITWARM_VERIFY": "replay"},
            "d": {**pulling, **poisoned, **no_gpu}}
    for name, extra in legs.items():
        pulled = phase(opts.work, f"pull-{name}", env(name, **extra), 120, "warm")
        pulled["replay_new_entries"] = replay_new_entries(opts.work / name)
        pulled["entries"] = len(entry_names(opts.work / name))
        stale, _ = doit(env(name), 60, "list", "--status", "--all")  # this host, its GPU visible
        rows = [line.split()[:2] for line in (stale.stdout if stale else "").splitlines()]
        pulled["stale_after"] = sum(len(r) == 2 and r[0] == "R" and r[1].startswith("warm:") for r in rows)
        result[f"pull_{name}"] = pulled
    result["pull_d"]["sglang_sweep_on_gpu"] = sglang_sweep(opts.work, opts.work / "d", models, base)
    cold = result["cold"]["wall_s"]
    result["pull_wall_s"] = {"proven": result["pull_b"]["wall_s"], "replay": result["pull_c"]["wall_s"],
                             "declared_gpu_no_gpu_visible": result["pull_d"]["wall_s"]}
    result["ratio_pull_to_cold"] = {k: round(w / cold, 4) for k, w in result["pull_wall_s"].items()}
    result["targets"] = {"proven_pull_s": 2.0, "proven_pull_torch_free": "pull_b rc 0 with torch poisoned"}
    fp = result["cold"].get("fingerprint", {})
    result["gpu"] = fp.get("gpu.name")
    result["versions"] = {k: fp.get(k) for k in ("deep_gemm.dist", "deep_gemm.version", "torch", "nvcc", "python")}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
