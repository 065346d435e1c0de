"""DeepSeek-V2/V3/V3.2 and GLM-5: MLA attention, optional DSA indexer, MoE with shared experts.

Restates srt/models/deepseek_v2.py and layers/attention/dsa/dsa_indexer.py of sglang 0.5.23.
"""

from __future__ import annotations

from tasks.plan import gemms, indexer
from tasks.plan.gemms import Fields, GemmShape, Kind, Plan, PlanEnv, divide, linear
from tasks.plan.launch_args import ServerFlags

ARCHITECTURES = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM",
                 "GlmMoeDsaForCausalLM")
# The configs' model_type for each (their Hugging Face configs; Kimi K2 ships V3's class).
MODEL_TYPES = {"DeepseekV2ForCausalLM": ("deepseek_v2",), "DeepseekV3ForCausalLM": ("deepseek_v3", "kimi_k2"),
               "DeepseekV32ForCausalLM": ("deepseek_v32",), "GlmMoeDsaForCausalLM": ("glm_moe_dsa",)}
# Each class and the architecture it fuses shared experts for (deepseek_v2.py:3319-3322;
# glm4_moe.py:1284-1285 overrides it for GLM-5). V3.2 keeps V3's, so it never matches.
_FUSED_SHARED_ARCHITECTURE = {
    "DeepseekV2ForCausalLM": "DeepseekV3ForCausalLM",
    "DeepseekV3ForCausalLM": "DeepseekV3ForCausalLM",
    "DeepseekV32ForCausalLM": "DeepseekV3ForCausalLM",
    "GlmMoeDsaForCausalLM": "GlmMoeDsaForCausalLM",
}
# deepseek_v2.py:3262-3275: the fused q_a / kv_a linear, as the quantization config sees its checkpoint shards.
PACKED = {"fused_qkv_a_proj_with_mqa": ("q_a_proj", "kv_a_proj_with_mqa")}
# deepseek_v2.py:874-887: shared experts run unsharded (replicated) under these all-to-all backends.
_SHARED_TP1_A2A = ("deepep", "pplx", "mooncake", "nixl", "mori", "ascend_fuseep", "flashinfer", "megamoe",
                   "flashinfer_megamoe", "deepep_v2")


def plan(c: Fields, flags: ServerFlags, env: PlanEnv, gpu_memory_mib: int | None = None) -> Plan:
    result = Plan()
    _attention(result, c, flags, env)
    if c.int("index_topk", default=None, allow_none=True):
        indexer.plan(result, c, flags, env, gpu_memory_mib)
    _mlp(result, c, flags, env)
    gemms.note_overlap(result, flags)
    return result


def _attention(result: Plan, c: Fields, flags: ServerFlags, env: PlanEnv) -> None:
    hidden = c.int("hidden_size")
    heads = divide(c.int("num_attention_heads"), flags.attn_tp, "num_attention_heads")
    q_lora = c.int("q_lora_rank", allow_none=True)
    kv_lora = c.int("kv_lora_rank")
    nope, rope, v_dim = c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim"), c.int("v_head_dim")
    tp = f"attention tp {flags.attn_tp}"
    every = range(c.int("num_hidden_layers"))

    def attn(layer, n, k, module):
        linear(result, c, flags, layer, n, k, module=f"self_attn.{module}", layers=every)

    if q_lora:
        # deepseek_v2.py:2070-2085: q_a and kv_a fused and replicated; q_b column-parallel.
        attn("fused_qkv_a_proj (replicated)", q_lora + kv_lora + rope, hidden, "fused_qkv_a_proj_with_mqa")
        attn(f"q_b_proj ({tp})", heads * (nope + rope), q_lora, "q_b_proj")
    else:
        attn(f"q_proj ({tp})", heads * (nope + rope), hidden, "q_proj")
        attn("kv_a_proj_with_mqa (replicated)", kv_lora + rope, hidden, "kv_a_proj_with_mqa")
    attn(f"kv_b_proj ({tp})", heads * (nope + v_dim), kv_lora, "kv_b_proj")
    attn(f"o_proj ({tp})", hidden, heads * v_dim, "o_proj")

    if c.int("index_topk", default=None, allow_none=True):
        _indexer(result, c, flags, env, hidden, q_lora)

    if env.use_deepgemm_bmm:
        # SGLANG_USE_DEEPGEMM_BMM: MLA absorbed w_kc / w_vc as masked grouped GEMMs per head.
        result.add(GemmShape(Kind.MASKED, kv_lora, nope, heads), "w_kc (SGLANG_USE_DEEPGEMM_BMM)")
        result.add(GemmShape(Kind.MASKED, v_dim, kv_lora, heads), "w_vc (SGLANG_USE_DEEPGEMM_BMM)")


def _indexer(result: Plan, c: Fields, flags: ServerFlags, env: PlanEnv, hidden: int, q_lora) -> None:
    """DSA indexer (V3.2, GLM-5): replicated block-FP8 linears (dsa_indexer.py:343-370)."""
    index_heads, index_dim = c.int("index_n_heads"), c.int("index_head_dim")
    # deepseek_v2.py:2117 reads indexer_rope_interleave (absent: false); dsa_indexer.py:310-314,
    # 352-367: on CUDA, interleaved rope fuses wk with weights_proj into one BF16 linear
    # that does not use DeepGEMM, unless SGLANG_DISABLE_DSA_INDEXER_FUSION.
    interleaved = c.flag("indexer_rope_interleave", False)
    fused = interleaved and not env.disable_dsa_indexer_fusion
    if q_lora:
        wq_b = GemmShape(c.linear_kind, index_heads * index_dim, q_lora)
        linear(result, c, flags, "indexer.wq_b (replicated)", wq_b.n, wq_b.k, module="self_attn.indexer.wq_b",
               layers=range(c.int("num_hidden_layers")))
        if wq_b in result.uses and not fused:
            # dsa_indexer.py:335-336, 900-905, 1958-1963: under CUDA-graph capture, M <= 1024
            # runs wq_b on ceil_align(SMs / 2, 8) SMs, a separate binary. The fused path
            # (dsa_indexer.py:2022-2029, taken first) never changes the SM count.
            result.not_covered.append(
                f"indexer.wq_b {wq_b.n}x{wq_b.k} on half the SMs at M <= 1024 during CUDA-graph capture "
                "(dsa_indexer.py:900-905): compiled at the first capture, not warmed")
    if fused:
        result.left_out.append("indexer.wk: fused with weights_proj into one BF16 linear (indexer_rope_interleave true)")
        return
    why = "SGLANG_DISABLE_DSA_INDEXER_FUSION" if interleaved else "indexer_rope_interleave false"
    linear(result, c, flags, f"indexer.wk (replicated; not fused with weights_proj: {why})", index_dim, hidden,
           module="self_attn.indexer.wk", layers=range(c.int("num_hidden_layers")))


def _mlp(result: Plan, c: Fields, flags: ServerFlags, env: PlanEnv) -> None:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    first_dense = min(c.int("first_k_dense_replace", default=0), layers)
    routed = c.int("n_routed_experts", default=None, allow_none=True) or 0

    if first_dense > 0 or not routed:
        # deepseek_v2.py:2665: replicated when --moe-dense-tp-size 1, else the full tp
        # (validation_hook.py:207-211 allows only 1 or tp).
        dense_tp = flags.moe_dense_tp_size or flags.tp
        inter = divide(c.int("intermediate_size"), dense_tp, "intermediate_size")
        how = f"first {first_dense} layers, tp {dense_tp}"
        dense = range(first_dense if routed else layers)
        linear(result, c, flags, f"dense gate_up_proj ({how})", 2 * inter, hidden, module="mlp.gate_up_proj", layers=dense)
        linear(result, c, flags, f"dense down_proj ({how})", hidden, inter, module="mlp.down_proj", layers=dense)
    if not routed or layers <= first_dense:
        return

    shared = c.int("n_shared_experts", default=0, allow_none=True) or 0
    fused, why_not = _shared_experts_fusion(c, flags, routed, shared)
    if (env.bf16_fp32_gemm_algo == "deep_gemm" and not c.flag("router_fp32", False)
            and not flags.enable_deterministic_inference):
        # MoEGate: a BF16 weight unless router_fp32 (deepseek_v2.py:509-517); forward routes through
        # linear_bf16_fp32 unless deterministic (574-593), which calls DeepGEMM's bf16 x bf16 -> fp32
        # GEMM under this env (kernels/ops/gemm/bf16_fp32.py:153-158).
        result.add(GemmShape(Kind.BF16F32, routed, hidden), "router gate (SGLANG_OPT_BF16_FP32_GEMM_ALGO=deep_gemm)")
    if fused and flags.moe_a2a_backend in gemms.DEEPEP_CLASS_A2A:
        slots = flags.ep  # moe/utils.py:668-675 + deepseek_v2.py:689-697: one shared slot per EP rank
    else:
        slots = shared if fused else 0  # deepseek_v2.py:698-702
    if fused:
        result.left_out.append(f"shared experts: fused into the routed experts as {slots} extra expert(s)")
    sparse = range(first_dense, layers)
    gemms.routed_experts(result, c, flags, routed, slots, env, module="mlp.experts", layers=sparse)
    if shared and not fused:
        # deepseek_v2.py:866-897: the shared experts are their own MLP, replicated under the
        # all-to-all backends or SGLANG_SHARED_EXPERT_TP1, else tensor parallel.
        tp1 = flags.moe_a2a_backend in _SHARED_TP1_A2A or env.shared_expert_tp1
        shared_tp = 1 if tp1 else flags.tp
        inter = divide(c.int("moe_intermediate_size") * shared, shared_tp, "moe_intermediate_size * n_shared_experts")
        how = f"not fused: {why_not}; " + ("replicated" if tp1 else f"tp {flags.tp}")
        linear(result, c, flags, f"shared_experts gate_up_proj ({how})", 2 * inter, hidden,
               module="mlp.shared_experts.gate_up_proj", layers=sparse)
        linear(result, c, flags, f"shared_experts down_proj ({how})", hidden, inter,
               module="mlp.shared_experts.down_proj", layers=sparse)


def _shared_experts_fusion(c: Fields, flags: ServerFlags, routed: int, shared: int) -> tuple[bool, str]:
    """Whether sglang fuses the shared experts into the routed MoE, and if not, why
    (moe/utils.py:600-620 resolve_shared_experts_config; deepseek_v2.py:3324-3396)."""
    if not shared:
        return False, "no shared experts"
    if flags.disable_shared_experts_fusion:
        return False, "--disable-shared-experts-fusion"
    if flags.enforce_shared_experts_fusion:
        return True, ""  # deepseek_v2.py:3340-3341: skips every later check
    if flags.enable_two_batch_overlap or flags.enable_single_batch_overlap:
        return False, "two- or single-batch overlap (deepseek_v2.py:3353-3354)"
    if flags.moe_a2a_backend in gemms.DEEPEP_CLASS_A2A:
        return False, f"{flags.moe_a2a_backend} all-to-all (deepseek_v2.py:3355-3356)"
    wanted = _FUSED_SHARED_ARCHITECTURE.get(c.arch)
    if c.arch != wanted:
        return False, f"{c.arch} fuses only a {wanted} checkpoint (deepseek_v2.py:3322, 3357-3358)"
    if routed != 256 or shared != 1:
        # deepseek_v2.py:3359-3374; 384 experts fuse only for Quark MXFP4 checkpoints, never block FP8.
        return False, f"{routed} routed + {shared} shared experts are not on the allow-list (deepseek_v2.py:3359-3374)"
    if flags.ep > 1:
        return False, "expert parallelism on CUDA (deepseek_v2.py:3385-3391)"
    return True, ""
