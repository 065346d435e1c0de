"""Planner shape sets against FACTS.md §4 (DeepSeek-V3) and the GLM-5 / V3.2 extensions."""

import tomllib

import pytest

from conftest import REPO
from tasks.plan import launch_args
from tasks.plan.planner import GemmShape, Kind, plan, PlanError

N, C, M = Kind.NORMAL, Kind.CONTIG, Kind.MASKED


def config(name):
    return tomllib.loads((REPO / "models" / f"{name}.toml").read_text())["config"]


def shapes(name, args, tp=8, **kw):
    return set(plan(config(name), launch_args.parse(args, tp), **kw).shapes)


def normal(*pairs):
    return {GemmShape(N, n, k) for n, k in pairs}


def grouped(n, k, groups):
    return {GemmShape(C, n, k, groups), GemmShape(M, n, k, groups)}


V3_TP8_ATTN = normal((2112, 7168), (3072, 1536), (4096, 512), (7168, 2048))
V3_DP8_ATTN = normal((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384))
V3_DENSE = normal((4608, 7168), (7168, 2304))


def test_v3_tp8_matches_facts_table():
    assert shapes("deepseek-v3-0324", []) == V3_TP8_ATTN | V3_DENSE


def test_v3_tp8_deep_gemm_runner_adds_fused_routed_experts():
    got = shapes("deepseek-v3-0324", ["--moe-runner-backend", "deep_gemm"])
    assert got == V3_TP8_ATTN | V3_DENSE | grouped(512, 7168, 257) | grouped(7168, 256, 257)


def test_v3_tp8_dp8_dp_attention_matches_facts_table():
    assert shapes("deepseek-v3-0324", ["--dp", "8", "--enable-dp-attention"]) == V3_DP8_ATTN | V3_DENSE


def test_v3_ep8_deepep_matches_facts_table_plus_unfused_shared_experts():
    args = ["--dp", "8", "--enable-dp-attention", "--moe-a2a-backend", "deepep"]
    table = V3_DP8_ATTN | V3_DENSE | grouped(4096, 7168, 32) | grouped(7168, 2048, 32)
    # FACTS.md's table leaves these out: under DeepEP sglang does not fuse the shared expert
    # and runs it as an unsharded (tp_size=1) block-FP8 MLP, which DeepGEMM serves.
    shared = normal((4096, 7168), (7168, 2048))
    assert shapes("deepseek-v3-0324", args) == table | shared
    assert shapes("deepseek-v3-0324", ["--enable-deepep-moe", "--dp", "8", "--enable-dp-attention"]) == table | shared


def test_deepep_modes_pick_contig_or_masked():
    base = ["--moe-a2a-backend", "deepep"]
    normal_mode = shapes("deepseek-v3-0324", base + ["--deepep-mode", "normal"])
    low_latency = shapes("deepseek-v3-0324", base + ["--deepep-mode=low_latency"])
    assert {s.kind for s in normal_mode if s.groups > 1} == {C}
    assert {s.kind for s in low_latency if s.groups > 1} == {M}


def test_moe_dense_tp_size_unshards_dense_mlp():
    got = shapes("deepseek-v3-0324", ["--dp", "8", "--enable-dp-attention", "--moe-dense-tp-size", "1"])
    assert got == V3_DP8_ATTN | normal((36864, 7168), (7168, 18432))


def test_v32_adds_indexer_linears():
    got = shapes("deepseek-v3.2", ["--dp", "8", "--enable-dp-attention"])
    assert got == V3_DP8_ATTN | V3_DENSE | normal((8192, 1536), (128, 7168))


def test_glm5_dp8():
    got = shapes("glm-5-fp8", ["--dp", "8", "--enable-dp-attention"])
    assert got == normal((2624, 6144), (16384, 2048), (28672, 512), (6144, 16384),
                         (4096, 2048), (128, 6144), (3072, 6144), (6144, 1536))


def test_deepgemm_bmm_env_adds_masked_absorbed_mla():
    got = shapes("deepseek-v3-0324", [], use_deepgemm_bmm=True)
    assert got - (V3_TP8_ATTN | V3_DENSE) == {GemmShape(M, 512, 128, 16), GemmShape(M, 128, 512, 16)}


def test_layers_are_named():
    result = plan(config("deepseek-v3-0324"), launch_args.parse([], 8))
    assert result.uses[GemmShape(N, 7168, 2048)] == ["o_proj"]
    assert result.uses[GemmShape(N, 2112, 7168)] == ["fused_qkv_a_proj"]


def test_unknown_architecture_needs_fallback():
    with pytest.raises(PlanError, match="no shape plan; needs the fallback path") as info:
        plan({"architectures": ["MiMoV2FlashForCausalLM"]}, launch_args.parse([], 4))
    assert info.value.field == "architectures"


def test_non_block_fp8_needs_fallback():
    cfg = dict(config("deepseek-v3-0324"), quantization_config=None)
    with pytest.raises(PlanError, match="not a block-FP8 checkpoint"):
        plan(cfg, launch_args.parse([], 8))


def test_bad_config_field_is_named():
    cfg = dict(config("deepseek-v3-0324"), hidden_size="7168")
    with pytest.raises(PlanError) as info:
        plan(cfg, launch_args.parse([], 8))
    assert info.value.field == "hidden_size"
    assert "'7168'" in str(info.value)


def test_heads_must_divide_attention_tp():
    cfg = dict(config("deepseek-v3-0324"), num_attention_heads=100)
    with pytest.raises(PlanError, match="not divisible by 8"):
        plan(cfg, launch_args.parse([], 8))
