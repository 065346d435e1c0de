"""Golden shape sets for the grouped-query-attention MoE models (tasks/plan/gqa_moe.py) and the
quantization configs every model now honours, read against sglang 0.5.23 (paths under
python/sglang/srt/). Rows are (kernel type, N, K, groups, M values)."""

import pytest
from test_planner import ALL, CONTIG_ALL, C, M, N, config, golden

from tasks.plan import launch_args
from tasks.plan.planner import GemmShape, PlanError, plan

# Qwen3-235B-A22B's structure (a public copy of its config.json in an LLM dashboard's demo, and a
# test fixture of an inference engine; both agree): 94 sparse layers, 64 heads / 4 KV heads of 128.
QWEN3_235B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_hidden_layers": 94,
    "hidden_size": 4096, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
    "intermediate_size": 12288, "moe_intermediate_size": 1536, "num_experts": 128, "num_experts_per_tok": 8,
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
}
# GLM-4.5 (355B) as a public Megatron bridge's test config restates it: 3 dense layers, 160 routed + 1 shared.
GLM45 = {
    "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "num_hidden_layers": 92,
    "hidden_size": 5120, "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 12288, "moe_intermediate_size": 1536, "n_routed_experts": 160, "n_shared_experts": 1,
    "first_k_dense_replace": 3,
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
}


def test_shipped_minimax_m2_tp4_plans_attention_and_leaves_experts_on_triton():
    assert golden(config("minimax-m2"), [], tp=4) == {
        (N, 2048, 3072, 1, ALL),  # qkv_proj: (48/4 + 2 x 8/4) x 128 (minimax_m2.py:681-690)
        (N, 3072, 1536, 1, ALL),  # o_proj: K = 12 heads x 128 (minimax_m2.py:692-699)
    }


def test_shipped_minimax_m2_deepep_runs_its_experts_on_deepgemm():
    assert golden(config("minimax-m2"), ["--moe-a2a-backend", "deepep"]) == {
        (N, 1024, 3072, 1, ALL),  # qkv_proj: 6 heads + 2 x 1 KV head (8 KV heads over tp 8) of 128
        (N, 3072, 768, 1, ALL),   # o_proj
        # 256 experts / ep 8 (DeepEP spans tp: overrides.py:1578-1620) of intermediate_size 1536
        # (minimax_m2.py:536-545); deepep_mode auto runs both layouts (moe/utils.py:268-289).
        (C, 3072, 3072, 32, CONTIG_ALL), (M, 3072, 3072, 32, ALL),
        (C, 3072, 1536, 32, CONTIG_ALL), (M, 3072, 1536, 32, ALL),
    }


def test_qwen3_235b_tp8_and_its_deepgemm_runner():
    assert golden(QWEN3_235B, []) == {
        (N, 1280, 4096, 1, ALL),  # qkv_proj: (8 + 2 x 1) x 128, 4 KV heads replicated over tp 8 (qwen3_moe.py:505-533)
        (N, 4096, 1024, 1, ALL),  # o_proj: K = 8 x 128 (qwen3_moe.py:536-543)
    }
    got = golden(QWEN3_235B, ["--moe-runner-backend", "deep_gemm"])
    # The deep_gemm runner on the standard dispatch: 128 experts, each 1536 / tp 8 wide (qwen3_moe.py:265-274).
    assert got - golden(QWEN3_235B, []) == {(C, 384, 4096, 128, CONTIG_ALL), (M, 384, 4096, 128, ALL),
                                            (C, 4096, 192, 128, CONTIG_ALL), (M, 4096, 192, 128, ALL)}


def test_glm45_fuses_its_shared_expert_on_cuda_and_not_under_deepep():
    base = {
        (N, 1792, 5120, 1, ALL),   # qkv_proj: (12 + 2 x 1) x 128 (glm4_moe.py:257-266)
        (N, 5120, 1536, 1, ALL),   # o_proj: K = 12 x 128
        (N, 3072, 5120, 1, ALL),   # dense gate_up: 2 x 12288 / 8, first 3 layers (glm4_moe.py:742-752)
        (N, 5120, 1536, 1, ALL),   # dense down (the same shape as o_proj)
    }
    runner = golden(GLM45, ["--moe-runner-backend", "deep_gemm"])
    # Fused on CUDA (glm4_moe.py:1012-1035): 160 + 1 experts of 1536 / 8.
    assert runner == base | {(C, 384, 5120, 161, CONTIG_ALL), (M, 384, 5120, 161, ALL),
                             (C, 5120, 192, 161, CONTIG_ALL), (M, 5120, 192, 161, ALL)}
    deepep = golden(GLM45, ["--attn-dp-size", "8", "--moe-a2a-backend", "deepep"])
    assert deepep == {
        (N, 14336, 5120, 1, ALL),  # qkv_proj unsharded: (96 + 2 x 8) x 128
        (N, 5120, 12288, 1, ALL),  # o_proj: K = 96 x 128
        (N, 3072, 5120, 1, ALL), (N, 5120, 1536, 1, ALL),  # dense MLP on the full tp
        # Not fused under DeepEP (glm4_moe.py:1023-1024): 160 / 8 experts; the shared expert replicated.
        (C, 3072, 5120, 20, CONTIG_ALL), (M, 3072, 5120, 20, ALL),
        (C, 5120, 1536, 20, CONTIG_ALL), (M, 5120, 1536, 20, ALL),
        (N, 3072, 5120, 1, ALL),
    }


def test_every_model_honours_its_unquantized_modules():
    # quantization/fp8.py:396-400 applies to every model, not only MiMo: a listed o_proj runs in BF16.
    cfg = config("deepseek-v3-0324")
    flags = launch_args.parse([], 8)
    ignored = dict(cfg, quantization_config=dict(cfg["quantization_config"], modules_to_not_convert=["o_proj"]))
    dropped = set(plan(cfg, flags).uses) - set(plan(ignored, flags).uses)
    assert dropped == {GemmShape(N, 7168, 2048)}
    assert any("o_proj" in line and "modules_to_not_convert" not in line and "unquantized" in line
               for line in plan(ignored, flags).left_out)
    # DeepSeek's fused q_a / kv_a linear is unquantized only when both checkpoint shards are (deepseek_v2.py:3262-3275).
    both = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=["q_a_proj", "kv_a_proj_with_mqa"]))
    assert GemmShape(N, 2112, 7168) not in plan(both, flags).uses
    one = dict(cfg, quantization_config=dict(cfg["quantization_config"], ignored_layers=["q_a_proj"]))
    with pytest.raises(PlanError, match="some but not all shards of model.layers.0.self_attn.fused_qkv_a_proj_with_mqa"):
        plan(one, flags)


# llm-compressor's FP8_BLOCK recipe for Kimi-K2-Thinking (examples/model_free_ptq/kimi_k2_thinking_fp8_block.py)
# writes a compressed-tensors config: block-FP8 Linear weights, dynamic FP8 inputs, and these ignored.
FP8_BLOCK = {
    "quant_method": "compressed-tensors", "format": "float-quantized",
    "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128],
                    "symmetric": True, "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128,
                              "symmetric": True, "dynamic": True}}},
    "ignore": ["re:.*gate$", "lm_head", "re:.*kv_a_proj_with_mqa$", "re:.*q_a_proj$", "model.embed_tokens"],
}


def test_compressed_tensors_block_fp8_linears_go_to_deepgemm_and_its_ignore_list_is_regex():
    cfg = dict(config("deepseek-v3-0324"), quantization_config=FP8_BLOCK)
    flags = launch_args.parse([], 8)
    got = golden(cfg, [])
    # compressed_tensors_w8a8_fp8.py:52-57: block weights take the block-FP8 dispatch, as fp8 checkpoints do;
    # the regexes keep both shards of fused_qkv_a unquantized (compressed_tensors/utils.py:24-100).
    assert got == golden(config("deepseek-v3-0324"), []) - {(N, 2112, 7168, 1, ALL)}
    assert any("fused_qkv_a_proj" in line and "quantization_config.ignore" in line for line in plan(cfg, flags).left_out)
    # Their experts never take DeepGEMM (compressed_tensors_w8a8_fp8_moe.py:341-365): a DeepEP launch needs the server.
    with pytest.raises(PlanError, match="compressed-tensors") as info:
        plan(cfg, launch_args.parse(["--moe-a2a-backend", "deepep"], 8))
    assert info.value.needs_fallback


def test_compressed_tensors_int4_weights_need_the_fallback():
    # Kimi-K2-Thinking as Moonshot ships it: INT4 W4A16 groups of 32 (pack-quantized), no DeepGEMM linears.
    int4 = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32},
        "input_activations": None}}}
    cfg = dict(config("deepseek-v3-0324"), quantization_config=int4)
    with pytest.raises(PlanError, match="not block FP8 W8A8") as info:
        plan(cfg, launch_args.parse([], 8))
    assert info.value.needs_fallback and info.value.field == "quantization_config.config_groups"
