"""Independent replay of sglang's DeepGEMM warmup over a cache, counting new entries.

It shares no code with jitwarm's worker: the executors below restate sglang 0.5.23's
compile_utils.py (_NormalWarmupExecutor and the six others), recipe included. It
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


def executors(torch, deep_gemm):
    """sglang 0.5.23's seven warmup executors (compile_utils.py:269-505), keyed by kernel type."""

    def token_fp8(*size, block=BLOCK):
        *dims, k = size
        return (torch.empty(size, device="cuda", dtype=torch.float8_e4m3fn),
                torch.ones((*dims, ceil_div(k, block)), device="cuda", dtype=torch.float32))

    def block_fp8(*size, block=BLOCK):
        *dims, n, k = size
        return (torch.empty(size, device="cuda", dtype=torch.float8_e4m3fn),
                torch.ones((*dims, ceil_div(n, block), ceil_div(k, block)), device="cuda", dtype=torch.float32))

    def bf16(*size):
        return torch.empty(size, device="cuda", dtype=torch.bfloat16)

    def normal(block):
        def make(max_m, n, k, g):
            lhs, rhs, out = token_fp8(max_m, k, block=block), block_fp8(n, k, block=block), bf16(max_m, n)
            return lambda m: deep_gemm.fp8_gemm_nt((lhs[0][:m], lhs[1][:m]), rhs, out[:m],
                                                   recipe=(1, block, block))
        return make

    def contig(max_m, n, k, g):
        lhs, rhs, out = token_fp8(max_m, k), block_fp8(g, n, k), bf16(max_m, n)
        idx = torch.zeros((max_m,), device="cuda", dtype=torch.int32)
        return lambda m: deep_gemm.m_grouped_fp8_gemm_nt_contiguous((lhs[0][:m], lhs[1][:m]), rhs, out[:m], idx[:m])

    def masked(max_m, n, k, g):
        lhs, rhs, out = token_fp8(g, max_m, k), block_fp8(g, n, k), bf16(g, max_m, n)
        masked_m = torch.zeros((g,), device="cuda", dtype=torch.int32)
        return lambda m: deep_gemm.fp8_m_grouped_gemm_nt_masked(lhs, rhs, out, masked_m=masked_m, expected_m=m)

    def bf16_contig(max_m, n, k, g):
        a, b, out = bf16(max_m, k), bf16(g, n, k), bf16(max_m, n)
        idx = torch.zeros((max_m,), device="cuda", dtype=torch.int32)
        return lambda m: deep_gemm.m_grouped_bf16_gemm_nt_contiguous(a[:m], b, out[:m], idx[:m])

    def bf16_masked(max_m, n, k, g):
        a, b, out = bf16(g, max_m, k), bf16(g, n, k), bf16(g, max_m, n)
        masked_m = torch.zeros((g,), device="cuda", dtype=torch.int32)
        return lambda m: deep_gemm.m_grouped_bf16_gemm_nt_masked(a, b, out, masked_m=masked_m, expected_m=m)

    def bf16_f32(max_m, n, k, g):
        lhs, rhs = bf16(max_m, k), bf16(n, k)
        out = torch.empty((max_m, n), device="cuda", dtype=torch.float32)
        return lambda m: deep_gemm.bf16_gemm_nt(lhs[:m], rhs, out[:m])

    return {"GEMM_NT_F8F8BF16": normal(BLOCK), "GEMM_NT_F8F8BF16_BLOCK32": normal(32),
            "GROUPED_GEMM_NT_F8F8BF16_CONTIG": contig, "GROUPED_GEMM_NT_F8F8BF16_MASKED": masked,
            "GROUPED_GEMM_NT_BF16_CONTIG": bf16_contig, "GROUPED_GEMM_NT_BF16_MASKED": bf16_masked,
            "GEMM_NT_BF16BF16F32": bf16_f32}


def main():
    import deep_gemm
    import torch

    plan = json.loads(Path(sys.argv[1]).read_text())
    root = os.environ["DG_JIT_CACHE_DIR"]
    make = executors(torch, deep_gemm)
    before = entries(root)
    started = time.monotonic()
    calls = 0
    for shape in plan["shapes"]:
        ms = shape["m_values"]
        execute = make[shape["kind"]](max(ms), shape["n"], shape["k"], shape["groups"])
        for m in ms:
            execute(m)
        calls += len(ms)
        torch.cuda.synchronize()
        del execute
        torch.cuda.empty_cache()
        # Progress on stderr: a run cut by its timeout still says how far it got and what it built.
        print(f"{shape['kind']} N={shape['n']} K={shape['k']}: {len(ms)} calls, {time.monotonic() - started:.1f}s, "
              f"{len(entries(root) - before)} new so far", file=sys.stderr, flush=True)

    new = sorted(entries(root) - before)
    json.dump({"shapes": len(plan["shapes"]), "calls": calls, "new_entries": len(new), "new": new,
               "seconds": round(time.monotonic() - started, 2)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
