"""Can discovery find a warm's kernels without waiting for nvcc? A feasibility probe, on a GPU.

Both cache layouts load a kernel by enumerating the one kernel of its cubin (0.1.2's _C.so
and DeepJIT's backend/cuda/kernel.hpp call cuLibraryEnumerateKernels), and the compile
workers only record their calls in CUDA graphs that never run. So a cubin holding any one
kernel should let a call go on as if its own kernel were built. This probe:
  B. runs a cold `doit warm` of the shipped targets (the real cache, built by discovery);
  S. makes every call of B's plan again, one fresh process per shape with an empty cache
     of its own, through an nvcc that records each kernel's source and hands back a stub
     cubin (one empty kernel, compiled once) instead of compiling;
and compares the entries S's caches hold with B's: the same names mean deep_gemm asked for
the same kernels, keyed the same way, without one real compile.

Usage: python bench/stub_discovery.py --work DIR [--models NAME...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit, entry_names  # noqa: E402

STUB_SHIM = """#!/bin/sh
case "$1" in *.cu) ;; *) exec "$JITWARM_REAL_NVCC" "$@" ;; esac
out=""; prev=""
for a in "$@"; do
    case "$prev" in -o|--output-file) out="$a" ;; esac
    case "$a" in --output-file=*|-o=*) out="${a#*=}" ;; esac
    prev="$a"
done
echo "$out" >> "$STUB_LOG"
cp "$STUB_CUBIN" "$out"
"""


def child(spec: dict) -> None:
    started = time.monotonic()
    import torch  # noqa: F401

    from tasks.runner.child import compile as compile_child
    from tasks.runner.child import executors, replay

    dg = replay.import_module("deep_gemm")
    executors.start_device()
    imported = time.monotonic()
    shape = spec["shape"]
    executor = executors.create(dg, shape["kind"], shape["n"], shape["k"], shape["groups"], spec["rows"],
                                aligned=True)
    calls, failures = spec["calls"], []
    for first in range(0, len(calls), 1024):
        try:
            with executor.capture():
                for m in calls[first:first + 1024]:
                    compile_child._call(executor, m)
        except Exception as exc:
            failures.append(f"{exc.__class__.__name__}: {str(exc)[:300]}")
    executor.sync()
    print(json.dumps({"import_s": round(imported - started, 3), "calls_s": round(time.monotonic() - imported, 3),
                      "calls": len(calls), "failures": failures[:3], "failed_chunks": len(failures)}))


def capture_plan(root: Path, into: Path, stop: threading.Event) -> None:
    while not stop.is_set() and not into.exists():
        for plan in root.glob("jitwarm/staging/pool-*/plan.json"):
            try:
                shutil.copy(plan, into)
            except OSError:
                continue
            break
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path)
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child")
    opts = parser.parse_args()
    if opts.child:
        child(json.loads(Path(opts.child).read_text()))
        return 0
    from kernel_queue import MODELS, warm

    from tasks.host import fingerprint
    from tasks.state import layouts

    work = opts.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "models").mkdir(parents=True)
    for name in opts.models or MODELS:
        shutil.copy(REPO / "models" / f"{name}.toml", work / "models")
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect("deep_gemm")),
                    "cpu_cores": len(os.sched_getaffinity(0))}
    b = work / "b"
    plan_copy = work / "plan.json"
    stop = threading.Event()
    watcher = threading.Thread(target=capture_plan, args=(b, plan_copy, stop), daemon=True)
    watcher.start()
    result["b_cold"] = warm(work, b)
    stop.set()
    print(json.dumps(result["b_cold"]), flush=True)
    plan = json.loads(plan_copy.read_text())

    real = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    cap = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.split()[0].replace(".", "")
    (work / "stub.cu").write_text('extern "C" __global__ void jitwarm_stub() {}\n')
    began = time.monotonic()
    subprocess.run([real, "-cubin", f"-arch=sm_{cap}a", "-o", str(work / "stub.cubin"), str(work / "stub.cu")],
                   check=True)
    result["stub_nvcc_s"] = round(time.monotonic() - began, 3)
    shim = work / "stub-nvcc"
    shim.write_text(STUB_SHIM)
    shim.chmod(0o755)

    shapes = plan["compile"][0]["plan"]["shapes"]
    rows = plan["compile"][0]["plan"]["rows"]
    calls: dict[int, list[int]] = {}
    for s, m in plan["queue"]:
        calls.setdefault(s, []).append(m)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DG_JIT_", "JITWARM_", "SGLANG_"))}

    def one(s: int) -> dict:
        spec = work / f"spec-{s}.json"
        spec.write_text(json.dumps({"shape": shapes[s], "rows": rows[s], "calls": calls.get(s, [])}))
        env = {**base, "DG_JIT_CACHE_DIR": str(work / "stubs" / str(s)), "DG_JIT_NVCC_COMPILER": str(shim),
               "JITWARM_REAL_NVCC": real, "STUB_LOG": str(work / f"stub-{s}.log"),
               "STUB_CUBIN": str(work / "stub.cubin")}
        out = subprocess.run([sys.executable, __file__, "--child", str(spec)], env=env, capture_output=True,
                             text=True, timeout=300)
        lines = out.stdout.strip().splitlines()
        got = json.loads(lines[-1]) if out.returncode == 0 and lines else {"rc": out.returncode,
                                                                             "tail": (out.stdout + out.stderr)[-1500:]}
        return {"shape": shapes[s], **got, "entries": sorted(entry_names(work / "stubs" / str(s)))}

    began = time.monotonic()
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        per_shape = list(pool.map(one, sorted(calls)))
    stub_wall = round(time.monotonic() - began, 2)
    found = set().union(*(set(r["entries"]) for r in per_shape))
    built = entry_names(b)
    result["s_stub_discovery"] = {
        "wall_s": stub_wall, "shapes": len(per_shape),
        "calls_s_max": max((r.get("calls_s", 0) for r in per_shape), default=0),
        "import_s_max": max((r.get("import_s", 0) for r in per_shape), default=0),
        "failed_chunks": sum(r.get("failed_chunks", 0) for r in per_shape),
        "failures": [f for r in per_shape for f in r.get("failures", [])][:5],
        "errors": [r for r in per_shape if "rc" in r][:3],
        "entries": len(found), "same_as_b": found == built,
        "only_in_stub": sorted(found - built)[:10], "only_in_b": sorted(built - found)[:10],
        "per_shape": [{k: r.get(k) for k in ("shape", "import_s", "calls_s", "calls")} | {"entries": len(r["entries"])}
                      for r in per_shape]}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
