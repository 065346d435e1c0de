"""Golden shape sets: every shipped target and the setups users asked for, read against sglang 0.5.23.

Each row is (kernel type, N, K, groups, number of M values) and cites the source that puts it
there; paths are under python/sglang/srt/ of the sglang 0.5.23 wheel. M lists: chunked prefill
8192 on a 141 GB H200 (arg_groups/memory_hook.py:89-170), divided by attention DP
(arg_groups/parallel_hook.py:326-332); the default sweep runs to 16384 unless chunked prefill
exceeds 8192 (deep_gemm_wrapper/compile_utils.py update_deep_gemm_config); CONTIG kinds keep
the M divisible by 128 (compile_utils.py:207-212).
"""

import tomllib

import pytest
from conftest import REPO

from tasks.plan import launch_args, mlists, targets
from tasks.plan.planner import GemmShape, Kind, PlanEnv, PlanError, plan

N, C, M, B32, F32 = Kind.NORMAL, Kind.CONTIG, Kind.MASKED, Kind.BLOCK32, Kind.BF16F32
H200_MIB, B200_MIB = 143771, 183359  # nvidia-smi memory.total
ALL, CONTIG_ALL = 16384, 128  # M values of the default sweep, and its CONTIG share


def spec(name):
    return tomllib.loads((REPO / "models" / f"{name}.toml").read_text())


def config(name):
    return spec(name)["config"]


def golden(cfg, args, tp=8, gpu_mib=H200_MIB, env=None):
    """{(kind, N, K, groups, M count)} as a warm of this launch sweeps them."""
    flags = launch_args.parse(args, tp)
    policy = mlists.policy(flags, False, None, gpu_mib)
    return {(w.shape.kind, w.shape.n, w.shape.k, w.shape.groups, len(w.m_values))
            for w in targets.works_for(plan(cfg, flags, env or PlanEnv(), gpu_mib), policy)}


def shipped(name):
    launch = spec(name)["launch"][0]
    return golden(config(name), launch.get("args", []), launch["tp"])


# DeepSeek-V3 at TP 8: hidden 7168, 128 heads / 8 = 16, q_lora 1536, kv_lora 512, rope 64, nope 128, v 128.
V3_TP8 = {
    (N, 2112, 7168, 1, ALL),   # fused_qkv_a_proj 1536+512+64, replicated (models/deepseek_v2.py:2070-2077)
    (N, 3072, 1536, 1, ALL),   # q_b_proj 16 x 192, column-parallel (deepseek_v2.py:2078-2085)
    (N, 4096, 512, 1, ALL),    # kv_b_proj 16 x (128+128)
    (N, 7168, 2048, 1, ALL),   # o_proj K = 16 x 128, row-parallel
    (N, 4608, 7168, 1, ALL),   # dense gate_up 2 x 18432/8, first 3 layers on the full tp (deepseek_v2.py:2665)
    (N, 7168, 2304, 1, ALL),   # dense down
    # No routed experts: the auto runner without all-to-all is Triton (layers/quantization/fp8.py:1520-1541);
    # the shared expert is fused into them (deepseek_v2.py:3324-3396).
}
# Attention DP 8 (attention tp 1): the same linears unsharded.
V3_ATTN_DP8 = {
    (N, 2112, 7168, 1, ALL),   # fused_qkv_a_proj
    (N, 24576, 1536, 1, ALL),  # q_b_proj 128 x 192
    (N, 32768, 512, 1, ALL),   # kv_b_proj 128 x 256
    (N, 7168, 16384, 1, ALL),  # o_proj K = 128 x 128
    (N, 4608, 7168, 1, ALL),   # the dense MLP stays on the full tp 8 (deepseek_v2.py:2665)
    (N, 7168, 2304, 1, ALL),
}


def test_shipped_deepseek_v3_tp8():
    assert shipped("deepseek-v3-0324") == V3_TP8


def test_shipped_deepseek_v32_adds_its_unfused_shared_experts_and_indexer():
    assert shipped("deepseek-v3.2") == V3_ATTN_DP8 | {
        # DeepseekV32ForCausalLM keeps fused_shared_experts_architecture "DeepseekV3ForCausalLM"
        # (deepseek_v2.py:3322, 3357-3358): no fusion, so the shared expert is its own MLP on tp 8
        # (deepseek_v2.py:864-897): 2 x 2048/8 and back.
        (N, 512, 7168, 1, ALL),
        (N, 7168, 256, 1, ALL),
        (N, 8192, 1536, 1, ALL),   # indexer.wq_b 64 x 128, replicated (layers/attention/dsa/dsa_indexer.py:343-349)
        # indexer.wk, 128 x 7168: V3.2's config has no indexer_rope_interleave -> false (deepseek_v2.py:2118),
        # so no wk/weights_proj fusion (dsa_indexer.py:310-314, 359-367).
        (N, 128, 7168, 1, ALL),
        # The indexer's MQA-logits kernels, 64 heads (tests/plan/test_indexer.py has their rules).
        (Kind.MQA_LOGITS, 64, 128, 1, 3),
        (Kind.PAGED_MQA_LOGITS, 64, 128, 1, 52),
    }


def test_shipped_glm5_fuses_shared_experts_and_the_indexer_wk():
    assert shipped("glm-5-fp8") == {
        # hidden 6144, 64 heads at attention tp 1, q_lora 2048, kv_lora 512, nope 192, rope 64, v 256.
        (N, 2624, 6144, 1, ALL),   # fused_qkv_a_proj 2048+512+64
        (N, 16384, 2048, 1, ALL),  # q_b_proj 64 x 256
        (N, 28672, 512, 1, ALL),   # kv_b_proj 64 x (192+256)
        (N, 6144, 16384, 1, ALL),  # o_proj K = 64 x 256
        (N, 4096, 2048, 1, ALL),   # indexer.wq_b 32 x 128
        (N, 3072, 6144, 1, ALL),   # dense gate_up 2 x 12288/8
        (N, 6144, 1536, 1, ALL),   # dense down
        # Shared expert fused: GLM's class fuses for its own architecture (models/glm4_moe.py:1284-1285).
        # indexer.wk fused with weights_proj into one BF16 linear: indexer_rope_interleave true.
        (Kind.MQA_LOGITS, 32, 128, 1, 3),  # the indexer's MQA logits, 32 heads (tests/plan/test_indexer.py)
        (Kind.PAGED_MQA_LOGITS, 32, 128, 1, 52),
    }


# MiMo (models/mimo_v2.py): QKVParallelLinear per rank = heads/attn_tp x 192 + max(1, kv/attn_tp) x (192+128)
# (mimo_v2.py:688-725); o_proj is BF16 (ignored_layers); layer 0's dense MLP on the full tp (mimo_v2.py:935-945);
# routed experts on Triton. Derived by hand from mimo_v2.py, the same four.
def test_shipped_mimo_v2_flash_tp4_attention_dp2():
    assert shipped("mimo-v2-flash") == {
        (N, 6784, 4096, 1, ALL),   # full layers: 32 x 192 + 2 x 320 (4 KV heads / attention tp 2)
        (N, 7424, 4096, 1, ALL),   # sliding-window layers: 32 x 192 + 4 x 320 (8 KV heads / 2)
        (N, 8192, 4096, 1, ALL),   # dense gate_up 2 x 16384/4
        (N, 4096, 4096, 1, ALL),   # dense down
    }


def test_shipped_mimo_v25_tp8_attention_dp2():
    assert shipped("mimo-v2.5") == {
        (N, 3392, 4096, 1, ALL),   # full: 16 x 192 + max(1, 4/4) x 320
        (N, 3712, 4096, 1, ALL),   # sliding window: 16 x 192 + 8/4 x 320
        (N, 4096, 4096, 1, ALL),   # dense gate_up 2 x 16384/8
        (N, 4096, 2048, 1, ALL),   # dense down
    }


def test_v3_ep8_deepep():
    got = golden(config("deepseek-v3-0324"), ["--attn-dp-size", "8", "--moe-a2a-backend", "deepep"])
    assert got == V3_ATTN_DP8 | {
        # DeepEP spans experts over tp: ep 8 (overrides.py:1578-1620); the auto runner is DeepGEMM
        # under it (quantization/fp8.py:1520-1541); 256 experts / 8 = 32 per rank, moe_intermediate
        # 2048 unsharded (tp / ep = 1). deepep_mode auto runs both layouts (moe/utils.py:268-289).
        (C, 4096, 7168, 32, CONTIG_ALL), (M, 4096, 7168, 32, ALL),
        (C, 7168, 2048, 32, CONTIG_ALL), (M, 7168, 2048, 32, ALL),
        # No shared-expert fusion under DeepEP (deepseek_v2.py:3355-3356); the shared expert is
        # replicated (tp 1) under all-to-all backends (deepseek_v2.py:874-887).
        (N, 4096, 7168, 1, ALL),
        (N, 7168, 2048, 1, ALL),
    }


def test_v3_deepep_normal_mode_redundant_experts_and_enforced_fusion():
    got = golden(config("deepseek-v3-0324"), ["--attn-dp-size", "8", "--moe-a2a-backend", "deepep",
                                              "--deepep-mode", "normal", "--ep-num-redundant-experts", "32",
                                              "--enforce-shared-experts-fusion"])
    # (256 routed + 8 shared slots, one per EP rank (moe/utils.py:668-675), + 32 redundant) / 8 = 37.
    assert {row for row in got if row[3] > 1} == {(C, 4096, 7168, 37, CONTIG_ALL), (C, 7168, 2048, 37, CONTIG_ALL)}
    assert (N, 4096, 7168, 1, ALL) not in got  # fused: no separate shared-expert MLP


@pytest.mark.parametrize("backend", ["mooncake", "nixl", "pplx"])
def test_low_latency_all_to_all_backends_default_to_masked_deepgemm(backend):
    got = golden(config("deepseek-v3-0324"), ["--moe-a2a-backend", backend])
    # token_dispatcher/mooncake.py:107-110, pplx.py:51: masked (low-latency) dispatch only.
    assert {row for row in got if row[3] > 1} == {(M, 4096, 7168, 32, ALL), (M, 7168, 2048, 32, ALL)}


def test_attn_dp_size_8_equals_the_deprecated_spelling_and_divides_chunked_prefill():
    current = golden(config("deepseek-v3-0324"), ["--attn-dp-size", "8"])
    assert current == V3_ATTN_DP8 == golden(config("deepseek-v3-0324"), ["--dp", "8", "--enable-dp-attention"])
    # 8192 / 8 = 1024 is what the fast sweep reads (parallel_hook.py:326-332).
    flags = launch_args.parse(["--attn-dp-size", "8"], 8)
    assert mlists.policy(flags, True, None, H200_MIB).values() == list(range(1, 1025))


def test_b200_class_gpu_sweeps_to_32768():
    # >= 160 GB: chunked prefill 16384 (memory_hook.py:146-168), so the sweep runs to 2 x 16384.
    got = golden(config("deepseek-v3-0324"), [], gpu_mib=B200_MIB)
    assert got == {(kind, n, k, g, 32768) for kind, n, k, g, _ in V3_TP8}


def test_block32_checkpoint_runs_the_block32_linears():
    cfg = dict(config("deepseek-v3-0324"))
    cfg["quantization_config"] = dict(cfg["quantization_config"], weight_block_size=[32, 32])
    # [32, 32] blocks: recipe (1, 32, 32) (kernels/ops/gemm/fp8_kernel.py:29-40) is the BLOCK32 type
    # (deep_gemm_wrapper/entrypoint.py:228-232), DeepGEMM on SM90 (quantization/fp8_utils.py:716-729).
    assert golden(cfg, []) == {(B32, n, k, g, m) for _, n, k, g, m in V3_TP8}
    # Routed experts of such a checkpoint on DeepGEMM: no rule here, so the server is run instead.
    with pytest.raises(PlanError, match="needs the fallback path") as info:
        golden(cfg, ["--moe-runner-backend", "deep_gemm"])
    assert info.value.needs_fallback


def test_deep_gemm_runner_fuses_the_shared_expert_as_a_257th_group():
    got = golden(config("deepseek-v3-0324"), ["--moe-runner-backend", "deep_gemm"])
    # deepseek_v2.py:698-702: one extra expert; tp 8 shards moe_intermediate 2048 / 8 = 256.
    assert got - V3_TP8 == {(C, 512, 7168, 257, CONTIG_ALL), (M, 512, 7168, 257, ALL),
                            (C, 7168, 256, 257, CONTIG_ALL), (M, 7168, 256, 257, ALL)}


def test_fusion_rules():
    v3 = config("deepseek-v3-0324")
    shared = {(N, 512, 7168, 1, ALL), (N, 7168, 256, 1, ALL)}  # the shared expert on tp 8
    assert golden(v3, ["--disable-shared-experts-fusion"]) == V3_TP8 | shared
    assert golden(v3, ["--enable-two-batch-overlap"]) == V3_TP8 | shared  # deepseek_v2.py:3353-3354
    # SGLANG_SHARED_EXPERT_TP1 replicates it (deepseek_v2.py:886).
    tp1 = golden(v3, ["--disable-shared-experts-fusion"], env=PlanEnv(shared_expert_tp1=True))
    assert tp1 == V3_TP8 | {(N, 4096, 7168, 1, ALL), (N, 7168, 2048, 1, ALL)}


def test_fp8_gemm_backend_other_than_deep_gemm_takes_the_linears_off_deepgemm():
    assert golden(config("deepseek-v3-0324"), ["--fp8-gemm-backend", "triton"]) == set()
    assert golden(config("deepseek-v3-0324"), ["--fp8-gemm-backend", "deep_gemm"]) == V3_TP8
    # flashinfer_deepgemm: FlashInfer takes 1 <= M < 32, DeepGEMM every other M (fp8_utils.py:1331-1349),
    # and DeepGEMM's first call sweeps the whole list, as under auto.
    assert golden(config("deepseek-v3-0324"), ["--fp8-gemm-backend", "flashinfer_deepgemm"]) == V3_TP8


def test_block32_linears_need_n_divisible_by_8_and_k_by_32_not_the_128_block_rule():
    """fp8_utils.py:1449-1459: [32, 32] blocks on SM90 take N % 8 == 0 and K % 32 == 0."""
    cfg = dict(config("deepseek-v3-0324"), q_lora_rank=1504)  # 1504 % 32 == 0, % 128 == 96
    # fused_qkv_a N = 1504 + 512 + 64 = 2080 (% 64 == 32); q_b_proj K = 1504.
    odd = {(2080, 7168), (3072, 1504)}
    assert not odd & {(n, k) for _, n, k, _, _ in golden(cfg, [])}  # [128, 128]: Triton
    cfg["quantization_config"] = dict(cfg["quantization_config"], weight_block_size=[32, 32])
    assert odd <= {(n, k) for kind, n, k, _, _ in golden(cfg, []) if kind is B32}
    # Under flashinfer_deepgemm, non-128 blocks stay on Triton (fp8_utils.py:716-734).
    assert golden(cfg, ["--fp8-gemm-backend", "flashinfer_deepgemm"]) == set()


def test_env_that_adds_gemms():
    v3 = config("deepseek-v3-0324")
    # SGLANG_OPT_BF16_FP32_GEMM_ALGO=deep_gemm: the router's bf16 x bf16 -> fp32 GEMM, 256 x 7168
    # (deepseek_v2.py:585-593, kernels/ops/gemm/bf16_fp32.py:153-158).
    router = golden(v3, [], env=PlanEnv(bf16_fp32_gemm_algo="deep_gemm"))
    assert router - V3_TP8 == {(F32, 256, 7168, 1, ALL)}
    assert golden(v3, ["--enable-deterministic-inference"], env=PlanEnv(bf16_fp32_gemm_algo="deep_gemm")) == V3_TP8
    # SGLANG_USE_DEEPGEMM_BMM: absorbed MLA w_kc / w_vc, masked, one group per local head.
    bmm = golden(v3, [], env=PlanEnv(use_deepgemm_bmm=True))
    assert bmm - V3_TP8 == {(M, 512, 128, 16, ALL), (M, 128, 512, 16, ALL)}
    # SGLANG_DISABLE_DSA_INDEXER_FUSION brings GLM-5's wk back to DeepGEMM.
    glm = config("glm-5-fp8")
    unfused = golden(glm, ["--attn-dp-size", "8"], env=PlanEnv(disable_dsa_indexer_fusion=True))
    assert unfused - golden(glm, ["--attn-dp-size", "8"]) == {(N, 128, 6144, 1, ALL)}


def test_rules_are_named_and_gaps_recorded():
    result = plan(config("deepseek-v3.2"), launch_args.parse(["--attn-dp-size", "8"], 8))
    assert result.uses[GemmShape(N, 512, 7168)] == [
        ("shared_experts gate_up_proj (not fused: DeepseekV32ForCausalLM fuses only a DeepseekV3ForCausalLM "
         "checkpoint (deepseek_v2.py:3322, 3357-3358); tp 8)")]
    assert any("runner auto with none all-to-all is not DeepGEMM" in why for why in result.left_out)
    assert result.not_covered == [
        ("indexer.wq_b 8192x1536 on half the SMs at M <= 1024 during CUDA-graph capture (dsa_indexer.py:900-905): "
         "compiled at the first capture, not warmed")]
    # GLM-5's indexer takes the fused path (indexer_rope_interleave true: dsa_indexer.py:310-314), which
    # runs wq_b on every SM (2022-2029); unfused, it takes V3.2's half-SM path again.
    glm = config("glm-5-fp8")
    assert plan(glm, launch_args.parse(["--attn-dp-size", "8"], 8)).not_covered == []
    unfused = plan(glm, launch_args.parse(["--attn-dp-size", "8"], 8), PlanEnv(disable_dsa_indexer_fusion=True))
    assert [gap.split(" on ")[0] for gap in unfused.not_covered] == ["indexer.wq_b 4096x2048"]
    tbo = plan(config("deepseek-v3-0324"), launch_args.parse(["--enable-two-batch-overlap"], 8))
    assert [gap.split(" runs")[0] for gap in tbo.not_covered] == ["two-batch overlap"]
    sbo = plan(config("deepseek-v3-0324"), launch_args.parse(["--enable-single-batch-overlap"], 8))
    assert [gap.split(" runs")[0] for gap in sbo.not_covered] == ["single-batch overlap"]
    assert "entrypoint.py:69-74" in sbo.not_covered[0]


def test_unknown_architecture_and_a2a_backend_need_fallback():
    with pytest.raises(PlanError, match="no shape plan; needs the fallback path") as info:
        plan({"architectures": ["Step3p5ForCausalLM"]}, launch_args.parse([], 4))
    assert info.value.field == "architectures" and info.value.needs_fallback
    with pytest.raises(PlanError, match="--moe-a2a-backend mori") as info:
        plan(config("deepseek-v3-0324"), launch_args.parse(["--moe-a2a-backend", "mori"], 8))
    assert info.value.needs_fallback


def test_non_block_fp8_needs_fallback():
    cfg = dict(config("deepseek-v3-0324"), quantization_config=None)
    with pytest.raises(PlanError, match="not a block-FP8 checkpoint"):
        plan(cfg, launch_args.parse([], 8))


@pytest.mark.parametrize("name, field, value, message", [
    ("deepseek-v3-0324", "hidden_size", "7168", "'7168'"),
    ("deepseek-v3-0324", "num_attention_heads", 100, "not divisible by 8"),
    ("glm-5-fp8", "indexer_rope_interleave", "yes", "expected true or false"),
    ("mimo-v2-flash", "hybrid_layer_pattern", [0, 1], "expected a list of 48 integers"),
    ("mimo-v2-flash", "swa_num_key_value_heads", 3, "3 KV heads neither divide nor are divided by"),
])
def test_bad_config_field_is_named(name, field, value, message):
    cfg = dict(config(name), **{field: value})
    args = spec(name)["launch"][0].get("args", [])
    with pytest.raises(PlanError, match=message) as info:
        plan(cfg, launch_args.parse(args, spec(name)["launch"][0]["tp"]))
    assert not info.value.needs_fallback
    assert info.value.field == field or message in str(info.value)


def test_mimo_ignored_layers_follow_sglangs_matching():
    cfg = config("mimo-v2-flash")
    args = launch_args.parse(spec("mimo-v2-flash")["launch"][0]["args"], 4)
    assert plan(cfg, args).uses[GemmShape(N, 4096, 4096)] == ["dense down_proj (1 dense layers, tp 4)"]
    # Quantized, o_proj (K = 32 heads x 128 at attention tp 2) joins the dense down_proj's shape.
    quantized = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=[]))
    assert [use.split(" (")[0] for use in plan(quantized, args).uses[GemmShape(N, 4096, 4096)]] == \
        ["o_proj", "o_proj", "dense down_proj"]
    # quantization/fp8.py:354-364 also matches the "model."-prefixed full name of every layer.
    each = [f"layers.{i}.self_attn.o_proj" for i in range(48)]
    listed = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=each))
    assert plan(listed, args).uses == plan(cfg, args).uses
    # One layer's o_proj unquantized: the other 47 still run its FP8 GEMM, so the shape stays planned.
    half = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=each[:1]))
    assert plan(half, args).uses == plan(quantized, args).uses
    # sglang refuses a fused linear with some shards quantized and some not (quantization/utils.py:100-105).
    shard = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=["q_proj"]))
    with pytest.raises(PlanError, match="some but not all shards of model.layers.0.self_attn.qkv_proj") as info:
        plan(shard, args)
    assert info.value.field == "quantization_config.ignored_layers"


def test_a_model_type_the_architecture_is_not_planned_for_needs_fallback():
    # Regression: an unknown model_type under a DeepSeek architecture was planned silently.
    cfg = dict(config("deepseek-v3-0324"), model_type="qwen3_moe")
    with pytest.raises(PlanError, match="model_type 'qwen3_moe' with architecture DeepseekV3ForCausalLM, which "
                                        "jitwarm plans for model_type 'deepseek_v3' or 'kimi_k2'") as info:
        plan(cfg, launch_args.parse([], 8))
    assert info.value.field == "model_type" and info.value.needs_fallback
    assert plan(dict(cfg, model_type="kimi_k2"), launch_args.parse([], 8)).shapes  # Kimi K2 ships V3's class
    without = {k: v for k, v in cfg.items() if k != "model_type"}
    assert plan(without, launch_args.parse([], 8)).shapes  # a config without one is taken by its architecture


def test_standard_layout_env_narrows_the_standard_dispatchs_expert_layouts():
    """SGLANG_DEEPGEMM_STANDARD_LAYOUT (environ.py:1352; moe_runner/deep_gemm.py:224-229, 1027-1030):
    compact never takes the masked layout; masked can still fall back to compact (212-222)."""
    v3, args = config("deepseek-v3-0324"), ["--moe-runner-backend", "deep_gemm"]
    kinds = {kind for kind, *_ in golden(v3, args, env=PlanEnv(deepgemm_standard_layout="compact")) if kind in (C, M)}
    assert kinds == {C}
    for layout in ("auto", "masked"):
        assert {kind for kind, *_ in golden(v3, args, env=PlanEnv(deepgemm_standard_layout=layout))
                if kind in (C, M)} == {C, M}
    # DeepEP's dispatch is not the standard one: its own mode decides.
    deepep = golden(v3, ["--moe-a2a-backend", "deepep"], env=PlanEnv(deepgemm_standard_layout="compact"))
    assert {kind for kind, *_ in deepep if kind in (C, M)} == {C, M}


def test_a_bad_standard_layout_env_fails_the_target_in_one_line():
    from tasks.plan import registry

    with pytest.raises(ValueError, match="SGLANG_DEEPGEMM_STANDARD_LAYOUT='wide': expected one of auto, masked"):
        registry.env_choice({"SGLANG_DEEPGEMM_STANDARD_LAYOUT": "wide"}, "SGLANG_DEEPGEMM_STANDARD_LAYOUT", "auto")
    assert registry.env_choice({"SGLANG_DEEPGEMM_STANDARD_LAYOUT": "Compact"},
                               "SGLANG_DEEPGEMM_STANDARD_LAYOUT", "auto") == "compact"
