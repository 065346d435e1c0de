"""Independent replay of the DSA indexer's DeepGEMM calls a DeepSeek-V3.2 / GLM-5 server
makes at start, over a cache, counting new entries.

It shares no code with jitwarm: the calls restate sglang 0.5.23 directly (paths under
python/sglang/srt/):
- decode, at every decode CUDA-graph batch size (arg_groups/cuda_graph_hook.py:500-532, max
  batch size by GPU memory and tp: arg_groups/memory_hook.py:130-170): the forward's schedule
  `get_paged_mqa_logits_metadata(context_lens [bs, 1], 64, get_num_sms())`
  (layers/attention/dsa_backend.py:1364-1382), then `fp8_paged_mqa_logits` on q [bs, 1, heads,
  128], in chunks of get_num_sms() rows with a schedule each when bs is larger
  (layers/attention/dsa/dsa_indexer.py:1254-1378, kernels/ops/attention/dsa/paged_mqa_logits.py:69-92);
- prefill `fp8_mqa_logits` with heads padded to 32 (dsa_indexer.py:1174-1184, 1604-1615), at a
  few lengths.

Usage: DG_JIT_CACHE_DIR=<root> python bench/indexer_replay.py HEADS [HEADS...] [--tp 8] [--max-bs N]
Prints JSON: calls made, new entries (a warmed root gives 0), seconds.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import entry_names  # noqa: E402

HEAD_DIM = 128  # index_head_dim of V3.2 and GLM-5
PAGE = 64


def capture_batch_sizes(max_bs):
    sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, max_bs + 1, 32)]
    sizes = [b for b in sizes if b <= max_bs]
    return sorted(set(sizes + [max_bs]))


def default_max_bs(torch, tp):
    mib = torch.cuda.get_device_properties(0).total_memory // (1 << 20)
    if mib >= 160 * 1024:
        return 512
    return 256 if tp < 4 else 512  # the 60-160 GiB class: H100, H200


def decode(torch, dg, heads, batch_sizes):
    sms = dg.get_num_sms()
    most = max(batch_sizes)
    q = torch.zeros((most, 1, heads, HEAD_DIM), device="cuda", dtype=torch.float8_e4m3fn)
    kv = torch.zeros((8, PAGE, 1, HEAD_DIM + 4), device="cuda", dtype=torch.uint8)
    weights = torch.ones((most, heads), device="cuda", dtype=torch.float32)
    lens = torch.ones((most, 1), device="cuda", dtype=torch.int32)
    table = torch.zeros((most, 8), device="cuda", dtype=torch.int32)
    calls = 0
    for bs in batch_sizes:
        schedule = dg.get_paged_mqa_logits_metadata(lens[:bs], 64, sms)
        spans = [(0, bs, schedule)] if bs <= sms else [
            (s, min(s + sms, bs), dg.get_paged_mqa_logits_metadata(lens[s:min(s + sms, bs)], 64, sms))
            for s in range(0, bs, sms)]
        for start, end, meta in spans:
            dg.fp8_paged_mqa_logits(q[start:end], kv, weights[start:end], lens[start:end], table[start:end], meta,
                                    8 * PAGE, clean_logits=False)
            calls += 1
    torch.cuda.synchronize()
    return calls


def prefill(torch, dg, heads, lengths):
    heads = max(heads, 32)
    calls = 0
    for m in lengths:
        q = torch.zeros((m, heads, HEAD_DIM), device="cuda", dtype=torch.float8_e4m3fn)
        kv = (torch.zeros((m, HEAD_DIM), device="cuda", dtype=torch.float8_e4m3fn),
              torch.ones((m,), device="cuda", dtype=torch.float32))
        weights = torch.ones((m, heads), device="cuda", dtype=torch.float32)
        ks = torch.zeros((m,), device="cuda", dtype=torch.int32)
        ke = torch.arange(1, m + 1, device="cuda", dtype=torch.int32)
        dg.fp8_mqa_logits(q, kv, weights, ks, ke, clean_logits=False)
        calls += 1
    torch.cuda.synchronize()
    return calls


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("heads", type=int, nargs="+", help="index_n_heads of each model")
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--max-bs", type=int, default=0)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 7, 333, 2048])
    opts = parser.parse_args()

    import deep_gemm
    import torch

    root = os.environ["DG_JIT_CACHE_DIR"]
    before = entry_names(root)
    started = time.monotonic()
    sizes = capture_batch_sizes(opts.max_bs or default_max_bs(torch, opts.tp))
    calls = sum(decode(torch, deep_gemm, h, sizes) + prefill(torch, deep_gemm, h, opts.lengths) for h in opts.heads)
    new = sorted(entry_names(root) - before)
    json.dump({"heads": opts.heads, "batch_sizes": len(sizes), "max_bs": max(sizes), "sms": deep_gemm.get_num_sms(),
               "calls": calls, "new_entries": len(new), "new": new,
               "seconds": round(time.monotonic() - started, 2)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
