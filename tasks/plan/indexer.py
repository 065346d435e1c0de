"""The DSA indexer's DeepGEMM kernels (DeepSeek-V3.2, GLM-5): what a server start compiles
besides GEMMs. Pure.

Restates sglang 0.5.23 (paths under python/sglang/srt/) and what selects a kernel in DeepGEMM
(sgl-deep-gemm 0.1.2 and 0.2.3.post2 headers, deep_gemm/include/deep_gemm/impls/sm90_fp8_*mqa_logits.cuh):

- decode, and so every CUDA-graph capture: `get_paged_mqa_logits_metadata(context_lens, 64, SMs)`
  then `fp8_paged_mqa_logits` (dsa_backend.py:1364-1382, dsa_indexer.py:1254-1378). The logits
  kernel is built for (next_n, heads, head dim, KV block); the schedule kernel for the row count
  rounded up to 32 (its template's kAlignedBatchSize) and the SM count. Rows above the SM count
  are scored in chunks of SM-count rows, each with its own schedule (dsa_indexer.py:1334-1378).
- prefill: `fp8_mqa_logits`, heads padded to 32 (dsa_indexer.py:1174-1184), built for
  (heads, head dim, SM count); no length is a template parameter.

The plan's shapes: PAGED_MQA_LOGITS(heads, head dim, next_n) called at each decode row count,
MQA_LOGITS(heads, head dim) at a few prefill lengths.
"""

from __future__ import annotations

from tasks.plan.gemms import Fields, GemmShape, Kind, Plan, PlanEnv
from tasks.plan.launch_args import ServerFlags

PAGE_SIZE = 64  # dsa_indexer.py:1242-1247: the CUDA path asserts page size 64
# dsa_indexer.py:1174-1184: prefill pads the heads to 32 for DeepGEMM.
PREFILL_MIN_HEADS = 32
# speculative_hook.py:1441-1457: (steps, topk, draft tokens) chosen for DeepSeek and GLM classes.
AUTO_SPEC = (3, 1, 4)
# Spellings speculative_hook.py:81-120 resolves to the EAGLE family (NEXTN is EAGLE).
EAGLE_FAMILY = ("EAGLE", "NEXTN", "EAGLE3", "MTP", "STANDALONE")
# Prefill lengths to call: the kernel takes none as a parameter, so a few prove it; the
# longest is capped to keep its logits buffer (rows x (rows + 256) floats) small.
PREFILL_CAP = 4096


def plan(result: Plan, c: Fields, flags: ServerFlags, env: PlanEnv, gpu_memory_mib: int | None) -> None:
    heads, head_dim = c.int("index_n_heads"), c.int("index_head_dim")
    if env.fp8_paged_mqa_logits_torch:
        result.left_out.append("indexer logits: SGLANG_FP8_PAGED_MQA_LOGITS_TORCH runs both on torch "
                               "(attention/dsa/utils.py:354-355, 457-504)")
        return
    _prefill(result, flags, heads, head_dim)
    if flags.dsa_paged_mqa_logits_backend in ("cutedsl", "aiter"):
        # paged_mqa_logits_backend.py:24-43: cutedsl needs SM100, aiter ROCm; neither is DeepGEMM.
        result.left_out.append(f"indexer decode logits: --dsa-paged-mqa-logits-backend "
                               f"{flags.dsa_paged_mqa_logits_backend} is not DeepGEMM (paged_mqa_logits_backend.py:24-43)")
        return
    _decode(result, flags, heads, head_dim, gpu_memory_mib)


def _prefill(result: Plan, flags: ServerFlags, heads: int, head_dim: int) -> None:
    padded = max(heads, PREFILL_MIN_HEADS)
    chunk = flags.chunked_prefill_size
    longest = chunk if chunk and 0 < chunk < PREFILL_CAP else PREFILL_CAP
    shape = GemmShape(Kind.MQA_LOGITS, padded, head_dim, 1)
    result.add(shape, f"indexer prefill fp8_mqa_logits: {heads} index heads"
               + (f" padded to {padded}" if padded != heads else "")
               + f", head dim {head_dim}, clean_logits False, no max_seqlen_k (dsa_indexer.py:1174-1184, 1604-1615); "
               "the kernel has no length parameter, so a few lengths stand for all", calls=(1, 128, longest))
    if flags.pp_size > 1:
        result.not_covered.append(
            f"indexer prefill fp8_mqa_logits on {padded} heads with one SM fewer: pipeline ranks but the last "
            "keep one SM for the receive (dsa_indexer.py:540-553, --pp-size "
            f"{flags.pp_size}): the SM count is a template parameter, so this kernel is built at first prefill")


def _decode(result: Plan, flags: ServerFlags, heads: int, head_dim: int, gpu_memory_mib: int | None) -> None:
    rows, how = decode_rows(flags, gpu_memory_mib)
    # dsa_backend.py:938-960: next_n > 1 (q as [B, next_n, H, D]) only on SM100; Hopper scores
    # every row as next_n 1 (kernels/ops/attention/dsa/paged_mqa_logits.py:69-92, the split path).
    shape = GemmShape(Kind.PAGED_MQA_LOGITS, heads, head_dim, 1)
    if rows:
        result.add(shape, f"indexer decode fp8_paged_mqa_logits + get_paged_mqa_logits_metadata: {heads} heads, "
                   f"head dim {head_dim}, KV block {PAGE_SIZE}, next_n 1 on SM90 (dsa_backend.py:938-960); "
                   f"rows {how}", calls=rows)
    if flags.disable_decode_cuda_graph:
        if flags.max_running_requests is None:
            result.not_covered.append(
                "indexer decode schedule (get_paged_mqa_logits_metadata): decode CUDA graphs are off, so decode "
                "runs eagerly at up to --max-running-requests rows, which is not given (sglang sizes it from "
                "memory): one kernel per 32 rows, built at first use")
        return
    result.later.append(
        f"indexer decode schedule for batches above the largest captured size ({max(rows) if rows else 0} rows): "
        "decode runs eagerly there (one schedule kernel per 32 rows up to --max-running-requests), at run time, "
        "not at start")


def decode_rows(flags: ServerFlags, gpu_memory_mib: int | None) -> tuple[tuple[int, ...], str]:
    """The row counts the decode indexer is called with at start, and how they were found."""
    per_request, spec = _tokens_per_request(flags)
    if flags.disable_decode_cuda_graph:
        if flags.max_running_requests is None:
            return (), ""
        batch = tuple(range(1, flags.max_running_requests + 1))
        how = f"1..{flags.max_running_requests} (decode CUDA graphs off: eager up to --max-running-requests)"
    else:
        batch, how = capture_batch_sizes(flags, gpu_memory_mib)
    rows = tuple(sorted({b * t for b in batch for t in per_request}))
    return rows, how + (f"; times {'/'.join(map(str, per_request))} tokens per request ({spec})" if spec else "")


def _tokens_per_request(flags: ServerFlags) -> tuple[tuple[int, ...], str]:
    """Rows per request in each forward mode that scores through the paged kernel."""
    algorithm = (flags.speculative_algorithm or "").upper()
    if not algorithm:
        return (1,), ""
    steps = flags.speculative_num_steps
    if steps is None and algorithm in EAGLE_FAMILY:
        steps, topk, draft = AUTO_SPEC
        source = f"{algorithm} with sglang's automatic steps 3, topk 1, draft tokens 4 (speculative_hook.py:1159-1174, 1441-1457)"
    else:
        topk = flags.speculative_eagle_topk or 1
        draft = flags.speculative_num_draft_tokens or ((steps or 0) + 1)
        source = f"{algorithm}, topk {topk}, draft tokens {draft}"
    # The draft model decodes topk rows per request; target verify and draft extend score each
    # request's draft tokens as rows of next_n 1 (dsa_backend.py:958-959: seqlens_expanded).
    return tuple(sorted({topk, draft})), source


def capture_batch_sizes(flags: ServerFlags, gpu_memory_mib: int | None) -> tuple[tuple[int, ...], str]:
    """sglang's decode CUDA-graph batch sizes (arg_groups/cuda_graph_hook.py:500-532)."""
    if flags.cuda_graph_bs_decode:
        return tuple(sorted(set(flags.cuda_graph_bs_decode))), "the captured batch sizes of --cuda-graph-bs-decode"
    max_bs, how = _max_bs(flags, gpu_memory_mib)
    if flags.disable_cuda_graph_padding:
        sizes = list(range(1, max_bs + 1))
    elif not flags.speculative_algorithm:
        sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, max_bs + 1, 32)]
    else:
        sizes = [*range(1, 9), *range(10, 33, 2), *range(40, 65, 4), *range(72, 257, 8), *range(272, max_bs + 1, 16)]
    sizes = [b for b in sizes if b <= max_bs]
    if max_bs not in sizes:
        sizes.append(max_bs)
    # base_cuda_graph_runner.py:65-102 also drops sizes above the request pool and adds the pool's
    # size: a row count at or below max_bs, whose schedule kernel (one per 32 rows) is among these.
    return tuple(sorted(set(sizes))), f"the decode CUDA-graph batch sizes up to {max_bs} ({how})"


def _max_bs(flags: ServerFlags, gpu_memory_mib: int | None) -> tuple[int, str]:
    """arg_groups/memory_hook.py:130-188: by GPU memory and tp, capped by --max-running-requests."""
    if flags.cuda_graph_max_bs_decode is not None:
        return flags.cuda_graph_max_bs_decode, "--cuda-graph-max-bs-decode"
    if gpu_memory_mib is None:
        size, how = (256 if flags.tp < 4 else 512), "no GPU visible here: sglang's default for 60-160 GiB GPUs"
    elif gpu_memory_mib < 20 * 1024:
        size, how = 8, "sglang's default below 20 GiB"
    elif gpu_memory_mib < 60 * 1024:
        size, how = (48 if gpu_memory_mib < 35 * 1024 else 32) if flags.tp < 4 else 160, "sglang's default below 60 GiB"
    elif gpu_memory_mib < 160 * 1024:
        size, how = (256 if flags.tp < 4 else 512), f"sglang's default for a {gpu_memory_mib // 1024} GiB GPU at tp {flags.tp}"
    else:
        size, how = 512, f"sglang's default for a {gpu_memory_mib // 1024} GiB GPU"
    if flags.max_running_requests is not None and size > flags.max_running_requests:
        return flags.max_running_requests, "--max-running-requests"
    return size, how
