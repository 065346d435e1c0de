"""Do smaller buffers select the same DeepGEMM kernels as sglang's full-size ones?

For a MASKED shape and several expected_m values, run deep_gemm once per buffer size
(rows of the (groups, rows, K) activation buffer), each in a fresh cache directory and a
fresh process, and compare the cache entries produced. Also reports how deep_gemm calls
nvcc (one printed compiler command) and whether an nvcc wrapper changes entry names.

Usage: python bench/masked_buffers.py --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402
sys.path.insert(0, str(REPO))

SHAPE = {"n": 4096, "k": 7168, "groups": 32}
EXPECTED_M = [1, 64, 512, 4096, 16384]
ROWS = [16384, 4096, 256, 64]

CHILD = r"""
import json, os, sys, torch, deep_gemm
n, k, g, rows = (int(x) for x in sys.argv[1:5])
ms = [int(x) for x in sys.argv[5].split(",")]
a = (torch.empty((g, rows, k), device="cuda", dtype=torch.float8_e4m3fn),
     torch.ones((g, rows, (k + 127) // 128), device="cuda", dtype=torch.float32))
b = (torch.empty((g, n, k), device="cuda", dtype=torch.float8_e4m3fn),
     torch.ones((g, (n + 127) // 128, (k + 127) // 128), device="cuda", dtype=torch.float32))
d = torch.empty((g, rows, n), device="cuda", dtype=torch.bfloat16)
masked = torch.zeros((g,), device="cuda", dtype=torch.int32)
out = {}
for m in ms:
    before = set(os.listdir(os.path.join(os.environ["DG_JIT_CACHE_DIR"], "cache"))) if os.path.isdir(os.path.join(os.environ["DG_JIT_CACHE_DIR"], "cache")) else set()
    try:
        deep_gemm.fp8_m_grouped_gemm_nt_masked(a, b, d, masked, m)
        torch.cuda.synchronize()
        err = None
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"[:300]
    after = set(os.listdir(os.path.join(os.environ["DG_JIT_CACHE_DIR"], "cache")))
    out[m] = {"new": sorted(after - before), "error": err}
print("RESULT " + json.dumps(out))
"""


def run_child(rows: int, cache: Path, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "DG_JIT_CACHE_DIR": str(cache), **(extra_env or {})}
    argv = [sys.executable, "-c", CHILD, str(SHAPE["n"]), str(SHAPE["k"]), str(SHAPE["groups"]), str(rows),
            ",".join(map(str, EXPECTED_M))]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="masked-buffers-"))
    started = time.monotonic()
    procs = {rows: run_child(rows, work / f"rows{rows}") for rows in ROWS}
    results = {}
    for rows, proc in procs.items():
        text, _ = proc.communicate(timeout=900)
        line = next((ln for ln in text.splitlines() if ln.startswith("RESULT ")), None)
        results[rows] = json.loads(line[7:]) if line else {"output_tail": text[-2000:]}

    # The same sweep with an nvcc wrapper that only logs and forwards: do entry names change?
    wrap_dir = work / "wrap"
    wrap_dir.mkdir()
    log = wrap_dir / "calls.log"
    wrapper = wrap_dir / "nvcc"
    real = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    proc = run_child(ROWS[-1], work / "wrapped", {"DG_JIT_NVCC_COMPILER": str(wrapper)})
    text, _ = proc.communicate(timeout=900)
    line = next((ln for ln in text.splitlines() if ln.startswith("RESULT ")), None)
    wrapped = json.loads(line[7:]) if line else {"output_tail": text[-2000:]}
    calls = log.read_text().splitlines() if log.exists() else []

    def entry_set(res):
        return sorted({e for v in res.values() if isinstance(v, dict) for e in v.get("new", [])})

    sets = {rows: entry_set(res) for rows, res in results.items()}
    from tasks.host import fingerprint
    from tasks.state import layouts
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())),
        "shape": {"kind": "GROUPED_GEMM_NT_F8F8BF16_MASKED", **SHAPE},
        "expected_m": EXPECTED_M,
        "per_rows": results,
        "entry_sets_identical": all(s == sets[ROWS[0]] for s in sets.values()),
        "entries_full_size": sets[ROWS[0]],
        "wrapped_nvcc": {"rows": ROWS[-1], "entries": entry_set(wrapped),
                         "identical_to_unwrapped": entry_set(wrapped) == sets[ROWS[-1]],
                         "nvcc_calls": calls[:3], "nvcc_call_count": len(calls)},
        "seconds": round(time.monotonic() - started, 1),
    }
    return emit(report, opts.out)


if __name__ == "__main__":
    sys.exit(main())
