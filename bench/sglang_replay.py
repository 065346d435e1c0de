"""Independent replay of sglang's DeepGEMM warmup over a cache, counting new entries.

It shares no code with jitwarm's worker: the executors below restate sglang's
compile_utils.py (_NormalWarmupExecutor and friends) for the deep_gemm 0.1.x API. It
reads the shapes and M lists from a plan JSON ({"shapes": [{kind, n, k, groups, m_values}]}),
runs every M of every shape against $DG_JIT_CACHE_DIR, and prints JSON with the number
of cache entries that appeared. A complete warm replays with 0 new entries.

Usage: DG_JIT_CACHE_DIR=<root> python bench/sglang_replay.py PLAN.json
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import entry_names  # noqa: E402

BLOCK = 128


def ceil_div(a, b):
    return (a + b - 1) // b


def entries(root):
    return entry_names(root)


def main():
    import deep_gemm
    import torch

    plan = json.loads(Path(sys.argv[1]).read_text())
    root = os.environ["DG_JIT_CACHE_DIR"]
    before = entries(root)
    started = time.monotonic()
    calls = 0

    def token_fp8(*size):
        *dims, k = size
        return (torch.empty(size, device="cuda", dtype=torch.float8_e4m3fn),
                torch.ones((*dims, ceil_div(k, BLOCK)), device="cuda", dtype=torch.float32))

    def block_fp8(*size):
        *dims, n, k = size
        return (torch.empty(size, device="cuda", dtype=torch.float8_e4m3fn),
                torch.ones((*dims, ceil_div(n, BLOCK), ceil_div(k, BLOCK)), device="cuda", dtype=torch.float32))

    for shape in plan["shapes"]:
        kind, n, k, g, ms = shape["kind"], shape["n"], shape["k"], shape["groups"], shape["m_values"]
        max_m = max(ms)
        if kind == "GEMM_NT_F8F8BF16":
            lhs, rhs = token_fp8(max_m, k), block_fp8(n, k)
            out = torch.empty((max_m, n), device="cuda", dtype=torch.bfloat16)
            for m in ms:
                deep_gemm.fp8_gemm_nt((lhs[0][:m], lhs[1][:m]), rhs, out[:m])
        elif kind == "GROUPED_GEMM_NT_F8F8BF16_CONTIG":
            lhs, rhs = token_fp8(max_m, k), block_fp8(g, n, k)
            idx = torch.zeros((max_m,), device="cuda", dtype=torch.int32)
            out = torch.empty((max_m, n), device="cuda", dtype=torch.bfloat16)
            for m in ms:
                deep_gemm.m_grouped_fp8_gemm_nt_contiguous((lhs[0][:m], lhs[1][:m]), rhs, out[:m], idx[:m])
        else:
            lhs, rhs = token_fp8(g, max_m, k), block_fp8(g, n, k)
            masked = torch.zeros((g,), device="cuda", dtype=torch.int32)
            out = torch.empty((g, max_m, n), device="cuda", dtype=torch.bfloat16)
            for m in ms:
                deep_gemm.fp8_m_grouped_gemm_nt_masked(lhs, rhs, out, masked, m)
        calls += len(ms)
        torch.cuda.synchronize()
        del lhs, rhs, out
        torch.cuda.empty_cache()

    new = sorted(entries(root) - before)
    json.dump({"shapes": len(plan["shapes"]), "calls": calls, "new_entries": len(new), "new": new,
               "seconds": round(time.monotonic() - started, 2)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
