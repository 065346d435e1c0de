"""Where a replay's time goes on a GPU host: process start-up against the sweeps.

On a root that already holds every kernel of the shipped planned targets (warm it first,
e.g. with bench/remote_pull.py), a parent imports torch once and forks children as the
pool does. Measured:
  startup   k children at once (k = 1, 4, 8, 11, 16) importing deep_gemm and starting CUDA
  shapes    one child replaying every shape in turn: each shape's setup and captured sweep
  groups    the shapes spread over P children (P = 16, 8, 4; longest sweeps first, each
            to the least-loaded child), all at once: the wall of the whole replay phase
No child may compile: the root's entry count is checked before and after.

Usage: python bench/replay_procs.py --root DIR --models DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from _emit import emit, entry_names  # noqa: E402


def fork_all(bodies) -> tuple[float, list[dict]]:
    """Run each body in a forked child at once; return the wall and each child's dict."""
    started = time.monotonic()
    outs = []
    for body in bodies:
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                Path(path).write_text(json.dumps(body()))
                code = 0
            finally:
                os._exit(code)
        outs.append((pid, path))
    results = []
    for pid, path in outs:
        _, status = os.waitpid(pid, 0)
        text = Path(path).read_text()
        results.append(json.loads(text) if text else {"failed": status})
        os.unlink(path)
    return round(time.monotonic() - started, 3), results


def start_cuda() -> dict:
    """Import deep_gemm, then create the CUDA context, as a replay process does."""
    began = time.monotonic()
    importlib.import_module("deep_gemm")
    t1 = time.monotonic()
    import torch
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    return {"deep_gemm_import_s": round(t1 - began, 3), "cuda_s": round(time.monotonic() - t1, 3),
            "ready_s": round(time.monotonic() - began, 3)}


def replay(shapes: list[dict]) -> dict:
    from tasks.runner.child import protocol, replay
    from tasks.runner.child.protocol import Shape

    out = start_cuda()
    out["shapes"] = []
    import torch
    for shape in shapes:
        t0 = time.monotonic()
        executor = replay.executor_for("deep_gemm", Shape(**shape["shape"]), shape["m_values"], 128)
        m_values = shape["m_values"]
        for m in dict.fromkeys([m_values[0], m_values[-1]]):
            executor.execute(m)
        executor.sync()
        t1 = time.monotonic()
        capture = executor.capture
        for first in range(0, len(m_values), protocol.CAPTURE_CHUNK):
            capture = replay.sweep_chunk(executor, m_values[first:first + protocol.CAPTURE_CHUNK], capture)
        executor.sync()
        t2 = time.monotonic()
        del executor
        torch.cuda.empty_cache()
        out["shapes"].append({**shape["shape"], "m_count": len(m_values), "setup_s": round(t1 - t0, 3),
                              "sweep_s": round(t2 - t1, 3), "captured": capture is not None})
    return out


def groups_of(shapes: list[dict], costs: dict, parts: int) -> list[list[dict]]:
    bins: list[list] = [[0.0, []] for _ in range(parts)]
    for shape in sorted(shapes, key=lambda s: -costs[s["key"]]):
        slot = min(bins, key=lambda b: b[0])
        slot[0] += costs[shape["key"]]
        slot[1].append(shape)
    return [b[1] for b in bins if b[1]]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    os.environ["DG_JIT_CACHE_DIR"] = str(opts.root)
    os.environ["JITWARM_MODELS_DIR"] = str(opts.models)
    from tasks.cli import doit_tasks
    from tasks.plan import targets

    works = targets.shared_works(doit_tasks.load()[1]).values()
    shapes = [{"key": w.key, "shape": {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k,
                                       "groups": w.shape.groups}, "m_values": list(w.m_values)} for w in works]
    entries = lambda: len(entry_names(opts.root))  # noqa: E731
    before = entries()
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shapes": len(shapes),
                    "cpus": len(os.sched_getaffinity(0))}
    t0 = time.monotonic()
    importlib.import_module("torch")  # once, as the zygote does, before forking
    result["torch_import_s"] = round(time.monotonic() - t0, 3)
    result["startup"] = {}
    for k in (1, 4, 8, 11, 16):
        wall, outs = fork_all([start_cuda] * k)
        ready = [o["ready_s"] for o in outs]
        result["startup"][k] = {"wall_s": wall, "mean_ready_s": round(sum(ready) / k, 3), "max_ready_s": max(ready),
                                "children": outs}
    wall, (one,) = fork_all([lambda: replay(shapes)])
    result["shapes_in_one_process"] = {"wall_s": wall, **one}
    costs = {s["key"]: r["setup_s"] + r["sweep_s"] for s, r in zip(shapes, one.get("shapes", []))}
    result["groups"] = {}
    if len(costs) == len(shapes):
        for parts in (16, 8, 4):
            split = groups_of(shapes, costs, parts)
            wall, outs = fork_all([lambda g=g: replay(g) for g in split])
            result["groups"][parts] = {"wall_s": wall, "children": [
                {k: v for k, v in o.items() if k != "shapes"} | {"shapes": len(g), "sum_s": round(sum(
                    s["setup_s"] + s["sweep_s"] for s in o.get("shapes", [])), 3)} for o, g in zip(outs, split)]}
    result["entries_before"], result["entries_after"] = before, entries()
    from tasks.host import fingerprint
    from tasks.state import layouts
    fp = fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module()))
    result["gpu"] = fp["gpu.name"]
    result["versions"] = {k: fp.get(k) for k in ("deep_gemm.dist", "deep_gemm.version", "torch", "nvcc", "python")}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
