"""Golden plans for the DSA indexer's DeepGEMM kernels (tasks/plan/indexer.py), read against
sglang 0.5.23 (paths under python/sglang/srt/) and sgl-deep-gemm's kernel templates.

Each parameter's source:
- heads: config index_n_heads (V3.2 64, GLM-5 32: the registry's embedded configs); decode keeps
  them (the indexer's wq_b is replicated: layers/attention/dsa/dsa_indexer.py:343-349), prefill pads
  to 32 (dsa_indexer.py:1174-1184, _pad_heads_for_deep_gemm);
- head dim: config index_head_dim (128); KV block: page size 64 (dsa_indexer.py:1242-1247);
- next_n: 1 on SM90 for every forward mode (dsa_backend.py:938-960: q as [B, next_n] only on SM100);
- decode rows: the decode CUDA-graph batch sizes (arg_groups/cuda_graph_hook.py:500-532) up to
  max_bs 512 at tp >= 4 on a 60-160 GiB GPU (arg_groups/memory_hook.py:130-160), times the tokens
  per request under speculative decoding (speculative_hook.py:1159-1174, 1441-1457: steps 3, topk 1,
  draft tokens 4 for these architectures).
"""

import tomllib

import pytest
from conftest import REPO

from tasks.plan import indexer, launch_args, targets
from tasks.plan.planner import GemmShape, Kind, PlanEnv, plan

H200_MIB, H100_MIB, B200_MIB = 143771, 81559, 183359
# cuda_graph_hook.py:511-516 up to 512.
GRAPH_BS_512 = (1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), 512)
# cuda_graph_hook.py:519-525 (speculative) up to 512.
SPEC_BS_512 = (*range(1, 9), *range(10, 33, 2), *range(40, 65, 4), *range(72, 257, 8), *range(272, 513, 16))


def config(name):
    return tomllib.loads((REPO / "models" / f"{name}.toml").read_text())["config"]


def indexer_calls(name, args, tp=8, gpu_mib=H200_MIB, env=PlanEnv()):
    """{shape: calls} of the indexer kinds, as a warm makes them."""
    result = plan(config(name), launch_args.parse(args, tp), env, gpu_mib)
    return {s: result.calls[s] for s in result.shapes if s.kind.indexer}, result


DP8 = ["--dp", "8", "--enable-dp-attention"]


@pytest.mark.parametrize("name, heads, prefill_heads", [("deepseek-v3.2", 64, 64), ("glm-5-fp8", 32, 32)])
def test_shipped_dsa_targets_plan_the_paged_and_prefill_logits(name, heads, prefill_heads):
    got, result = indexer_calls(name, DP8)
    assert got == {
        GemmShape(Kind.PAGED_MQA_LOGITS, heads, 128, 1): GRAPH_BS_512,   # one row per request in decode
        GemmShape(Kind.MQA_LOGITS, prefill_heads, 128, 1): (1, 128, 4096),  # no length parameter: a few lengths
    }
    assert len(GRAPH_BS_512) == 52
    uses = result.uses[GemmShape(Kind.PAGED_MQA_LOGITS, heads, 128, 1)][0]
    assert "dsa_backend.py:938-960" in uses and "up to 512" in uses


def test_heads_below_32_are_padded_for_prefill_only():
    cfg = {**config("glm-5-fp8"), "index_n_heads": 16}
    result = plan(cfg, launch_args.parse(DP8, 8), PlanEnv(), H200_MIB)
    kinds = {s.kind: s.n for s in result.shapes if s.kind.indexer}
    assert kinds == {Kind.PAGED_MQA_LOGITS: 16, Kind.MQA_LOGITS: 32}


@pytest.mark.parametrize("name", ["deepseek-v3.2", "glm-5-fp8"])
def test_speculative_decoding_scores_each_draft_token_as_a_row_of_next_n_1(name):
    got, result = indexer_calls(name, [*DP8, "--speculative-algorithm", "NEXTN"])
    [paged] = [s for s in got if s.kind is Kind.PAGED_MQA_LOGITS]
    assert paged.groups == 1  # SM90: never q [B, next_n] (dsa_backend.py:950-957)
    # Draft decode: bs x topk 1 rows; target verify and draft extend: bs x 4 draft tokens.
    assert got[paged] == tuple(sorted({b * t for b in SPEC_BS_512 for t in (1, 4)}))
    assert max(got[paged]) == 2048
    assert "NEXTN with sglang's automatic steps 3, topk 1, draft tokens 4" in result.uses[paged][0]


def test_explicit_speculative_parameters_set_the_rows():
    got, _ = indexer_calls("deepseek-v3.2", [*DP8, "--speculative-algorithm", "EAGLE", "--speculative-num-steps",
                                             "2", "--speculative-eagle-topk", "2", "--speculative-num-draft-tokens", "6"])
    [rows] = [v for s, v in got.items() if s.kind is Kind.PAGED_MQA_LOGITS]
    assert rows == tuple(sorted({b * t for b in SPEC_BS_512 for t in (2, 6)}))


@pytest.mark.parametrize("tp, gpu_mib, max_bs", [
    (8, H100_MIB, 512), (2, H100_MIB, 256), (2, H200_MIB, 256), (2, B200_MIB, 512), (8, None, 512),
])
def test_decode_graph_sizes_follow_gpu_memory_and_tp(tp, gpu_mib, max_bs):
    rows, how = indexer.decode_rows(launch_args.parse([], tp), gpu_mib)
    assert max(rows) == max_bs
    assert ("no GPU visible" in how) == (gpu_mib is None)


def test_graph_flags_cap_or_list_the_rows():
    rows, _ = indexer.decode_rows(launch_args.parse(["--cuda-graph-max-bs-decode", "100"], 8), H200_MIB)
    assert rows == (1, 2, 4, 8, 12, *range(16, 97, 8), 100)
    rows, _ = indexer.decode_rows(launch_args.parse(["--max-running-requests", "48"], 8), H200_MIB)
    assert max(rows) == 48
    rows, how = indexer.decode_rows(launch_args.parse(["--cuda-graph-bs-decode", "4", "1", "300"], 8), H200_MIB)
    assert rows == (1, 4, 300) and "--cuda-graph-bs-decode" in how
    rows, _ = indexer.decode_rows(launch_args.parse(["--disable-cuda-graph-padding", "--cuda-graph-max-bs-decode",
                                                     "40"], 8), H200_MIB)
    assert rows == tuple(range(1, 41))


def test_without_decode_graphs_rows_need_max_running_requests_or_the_gap_is_listed():
    got, result = indexer_calls("deepseek-v3.2", [*DP8, "--disable-cuda-graph"])
    assert not any(s.kind is Kind.PAGED_MQA_LOGITS for s in got)
    assert any("decode CUDA graphs are off" in gap for gap in result.not_covered)
    got, result = indexer_calls("deepseek-v3.2", [*DP8, "--disable-decode-cuda-graph", "--max-running-requests", "64"])
    [rows] = [v for s, v in got.items() if s.kind is Kind.PAGED_MQA_LOGITS]
    assert rows == tuple(range(1, 65)) and not any("decode CUDA graphs" in gap for gap in result.not_covered)


def test_other_backends_and_the_torch_fallback_take_the_logits_off_deepgemm():
    got, result = indexer_calls("deepseek-v3.2", DP8, env=PlanEnv(fp8_paged_mqa_logits_torch=True))
    assert got == {} and any("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH" in why for why in result.left_out)
    got, result = indexer_calls("deepseek-v3.2", [*DP8, "--dsa-paged-mqa-logits-backend", "cutedsl"])
    assert {s.kind for s in got} == {Kind.MQA_LOGITS}  # prefill stays on DeepGEMM
    assert any("cutedsl is not DeepGEMM" in why for why in result.left_out)


def test_pipeline_parallel_prefill_on_one_sm_fewer_is_listed_as_not_warmed():
    _, result = indexer_calls("deepseek-v3.2", [*DP8, "--pp-size", "2"])
    assert any("one SM fewer" in gap and "dsa_indexer.py:540-553" in gap for gap in result.not_covered)
    _, plain = indexer_calls("deepseek-v3.2", DP8)
    assert not any("one SM fewer" in gap for gap in plain.not_covered)


def test_a_model_without_an_indexer_plans_none():
    got, result = indexer_calls("deepseek-v3-0324", [])
    assert got == {} and not result.later


def test_works_carry_the_rows_not_the_gemm_m_list():
    result = plan(config("deepseek-v3.2"), launch_args.parse(DP8, 8), PlanEnv(), H200_MIB)
    from tasks.plan import mlists

    works = {w.shape.kind: w for w in targets.works_for(result, mlists.policy(launch_args.parse(DP8, 8), False,
                                                                                None, H200_MIB))}
    assert works[Kind.PAGED_MQA_LOGITS].m_values == GRAPH_BS_512
    assert len(works[Kind.NORMAL].m_values) == 16384


def test_a_watched_or_locked_indexer_shape_is_called_once_not_over_the_gemm_m_list():
    locked, _ = targets.locked_plan([("FP8_PAGED_MQA_LOGITS", 64, 128, 1)])
    from tasks.plan import mlists

    [work] = targets.works_for(locked, mlists.MListPolicy("default", 8192))
    assert work.m_values == (1,)


@pytest.mark.parametrize("args, message", [
    (["--cuda-graph-bs-decode", "--tp", "8"], "argument --cuda-graph-bs-decode: expected at least one argument"),
    (["--cuda-graph-bs-decode", "4", "x"], "argument --cuda-graph-bs-decode: invalid int value: 'x'"),
    (["--dsa-paged-mqa-logits-backend", "tilelang"], "argument --dsa-paged-mqa-logits-backend: invalid choice: 'tilelang'"),
])
def test_bad_indexer_flags_are_refused_in_one_line(args, message):
    with pytest.raises(launch_args.ArgsError, match=message):
        launch_args.parse(args, 8)


@pytest.mark.parametrize("args", [[], ["--attn-dp-size", "4"], ["--chunked-prefill-size", "32768"]])
def test_attention_dp_and_chunked_prefill_leave_the_indexer_kernels_alone(args):
    """The indexer's projections are replicated (dsa_indexer.py:343-370), so its heads do not follow
    attention tp; chunked prefill changes prefill lengths, which no indexer kernel is built for."""
    assert indexer_calls("deepseek-v3.2", args)[0] == indexer_calls("deepseek-v3.2", DP8)[0]
