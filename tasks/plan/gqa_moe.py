"""Grouped-query attention with a routed MoE: Qwen3-MoE, GLM-4.5/4.6/4.7 and MiniMax-M2.

Restates srt/models/qwen3_moe.py, glm4_moe.py and minimax_m2.py of sglang 0.5.23. Each runs
qkv_proj and o_proj with the checkpoint's quantization on the attention-TP group, and its
experts through get_moe_impl_class, so on DeepGEMM only with its runner or a DeepEP-class
all-to-all (gemms.routed_experts). The routers stay off DeepGEMM: Qwen3's is an unquantized
BF16 linear (qwen3_moe.py:280-296), GLM's and MiniMax's are FP32 F.linear
(glm4_moe.py:381-399, minimax_m2.py:556-562).
"""

from __future__ import annotations

from tasks.plan import gemms
from tasks.plan.gemms import Fields, Plan, PlanEnv, PlanError, divide, linear
from tasks.plan.launch_args import ServerFlags

QWEN3, GLM4, MINIMAX = "Qwen3MoeForCausalLM", "Glm4MoeForCausalLM", "MiniMaxM2ForCausalLM"
ARCHITECTURES = (QWEN3, GLM4, MINIMAX)
MODEL_TYPES = {QWEN3: ("qwen3_moe",), GLM4: ("glm4_moe",), MINIMAX: ("minimax_m2",)}
# qwen3_moe.py:999-1002, minimax_m2.py:1021-1030; glm4_moe.py declares none.
PACKED = {QWEN3: {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")},
          MINIMAX: {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}}
# glm4_moe.py:471-490: the unfused shared expert runs replicated under these all-to-all backends.
_GLM_SHARED_REPLICATED_A2A = ("deepep", "mooncake", "nixl", "mori", "ascend_fuseep", "flashinfer",
                              "flashinfer_megamoe")


def plan(c: Fields, flags: ServerFlags, env: PlanEnv) -> Plan:
    result = Plan()
    layers = c.int("num_hidden_layers")
    every = range(layers)
    _attention(result, c, flags, every)
    if c.arch == QWEN3:
        # qwen3_moe.py:842-885: every layer is sparse in 0.5.23; experts from num_experts.
        gemms.routed_experts(result, c, flags, c.int("num_experts"), 0, env, module="mlp.experts", layers=every)
    elif c.arch == MINIMAX:
        # minimax_m2.py:536-545: num_local_experts experts of intermediate_size each, every layer sparse.
        gemms.routed_experts(result, c, flags, c.int("num_local_experts"), 0, env, inter_key="intermediate_size",
                             module="block_sparse_moe.experts", layers=every)
    else:
        _glm4_mlp(result, c, flags, env, layers)
    gemms.note_overlap(result, flags)
    return result


def _attention(result: Plan, c: Fields, flags: ServerFlags, every: range) -> None:
    """qkv_proj / o_proj (qwen3_moe.py:525-543, glm4_moe.py:257-275, minimax_m2.py:681-699)."""
    hidden = c.int("hidden_size")
    heads, kv = c.int("num_attention_heads"), c.int("num_key_value_heads")
    if heads == 0:
        raise PlanError("expected a positive integer, got 0", "num_attention_heads")
    head_dim = c.int("head_dim", default=hidden // heads)  # getattr default in all three
    local_heads = divide(heads, flags.attn_tp, "num_attention_heads")
    if kv == 0 or (kv >= flags.attn_tp and kv % flags.attn_tp) or (kv < flags.attn_tp and flags.attn_tp % kv):
        raise PlanError(f"{kv} KV heads neither divide nor are divided by attention tp {flags.attn_tp}",
                        "num_key_value_heads")
    local_kv = max(1, kv // flags.attn_tp)  # replicated when fewer KV heads than ranks
    how = f"attention tp {flags.attn_tp}: {local_heads} heads, {local_kv} KV heads of {head_dim}"
    linear(result, c, flags, f"qkv_proj ({how})", (local_heads + 2 * local_kv) * head_dim, hidden,
           module="self_attn.qkv_proj", layers=every)
    linear(result, c, flags, f"o_proj (attention tp {flags.attn_tp})", hidden, local_heads * head_dim,
           module="self_attn.o_proj", layers=every)


def _glm4_mlp(result: Plan, c: Fields, flags: ServerFlags, env: PlanEnv, layers: int) -> None:
    hidden = c.int("hidden_size")
    first_dense = min(c.int("first_k_dense_replace", default=0), layers)
    if first_dense:
        # glm4_moe.py:742-752: replicated when --moe-dense-tp-size 1 (layout.py:83-84), else the full tp.
        dense_tp = flags.moe_dense_tp_size or flags.tp
        inter = divide(c.int("intermediate_size"), dense_tp, "intermediate_size")
        dense = range(first_dense)
        how = f"first {first_dense} layers, tp {dense_tp}"
        linear(result, c, flags, f"dense gate_up_proj ({how})", 2 * inter, hidden, module="mlp.gate_up_proj", layers=dense)
        linear(result, c, flags, f"dense down_proj ({how})", hidden, inter, module="mlp.down_proj", layers=dense)
    if first_dense >= layers:
        return
    sparse = range(first_dense, layers)
    shared = c.int("n_shared_experts", default=0, allow_none=True) or 0
    fused, why_not = _glm4_fusion(flags, shared)
    if fused:
        result.left_out.append(f"shared experts: fused into the routed experts as {shared} extra expert(s) "
                               "(glm4_moe.py:1012-1035, moe/utils.py:601-623)")
    # glm4_moe.py:436-439: the experts layer holds no redundant experts.
    gemms.routed_experts(result, c, flags, c.int("n_routed_experts"), shared if fused else 0, env,
                         module="mlp.experts", layers=sparse, redundant=False)
    if shared and not fused:
        replicated = flags.moe_a2a_backend in _GLM_SHARED_REPLICATED_A2A
        shared_tp = 1 if replicated else flags.tp
        inter = divide(c.int("moe_intermediate_size") * shared, shared_tp, "moe_intermediate_size * n_shared_experts")
        how = f"not fused: {why_not}; " + ("replicated" if replicated else f"tp {flags.tp}")
        linear(result, c, flags, f"shared_experts gate_up_proj ({how})", 2 * inter, hidden,
               module="mlp.shared_experts.gate_up_proj", layers=sparse)
        linear(result, c, flags, f"shared_experts down_proj ({how})", hidden, inter,
               module="mlp.shared_experts.down_proj", layers=sparse)


def _glm4_fusion(flags: ServerFlags, shared: int) -> tuple[bool, str]:
    """glm4_moe.py:1012-1030 shared_experts_fusion_disable_reason on CUDA, via moe/utils.py:601-623."""
    if not shared:
        return False, "no shared experts"
    if flags.disable_shared_experts_fusion:
        return False, "--disable-shared-experts-fusion"
    if flags.ep > 1:
        return False, "expert parallelism on CUDA (glm4_moe.py:1019-1022)"
    if flags.moe_a2a_backend in ("deepep", "mori"):
        return False, f"{flags.moe_a2a_backend} all-to-all (glm4_moe.py:1023-1024)"
    return True, ""
