"""MiMo-V2 (MiMo-V2-Flash, MiMo-V2.5): hybrid full / sliding-window attention with two
KV-head counts, dense layers picked by moe_layer_freq, routed experts without shared ones.

Restates srt/models/mimo_v2.py of sglang 0.5.23 (one file for both architectures).
"""

from __future__ import annotations

from tasks.plan import gemms
from tasks.plan.gemms import Fields, Plan, PlanEnv, PlanError, divide, linear
from tasks.plan.launch_args import ServerFlags

# mimo_v2.py:1796-1800: the old Flash name stays loadable beside the current one.
ARCHITECTURES = ("MiMoV2ForCausalLM", "MiMoV2FlashForCausalLM")
MODEL_TYPES = {"MiMoV2ForCausalLM": ("mimo_v2", "mimo_v2_flash"), "MiMoV2FlashForCausalLM": ("mimo_v2_flash", "mimo_v2")}


def plan(c: Fields, flags: ServerFlags, env: PlanEnv) -> Plan:
    # Of PLAN_ENV_KEYS only SGLANG_DEEPGEMM_STANDARD_LAYOUT (its experts' layout) reaches MiMo's GEMMs:
    # its router is torch.mm / F.linear (mimo_v2.py:382, 400-409).
    result = Plan()
    layers = c.int("num_hidden_layers")
    swa = c.int_list("hybrid_layer_pattern", layers)  # mimo_v2.py:1015-1016: 1 marks a sliding-window layer
    moe = c.int_list("moe_layer_freq", layers)  # mimo_v2.py:1007-1013: nonzero marks a MoE layer
    hidden = c.int("hidden_size")
    skipped = c.skipped

    kinds = {"full": [i for i in range(layers) if swa[i] != 1],
             "sliding-window": [i for i in range(layers) if swa[i] == 1]}
    prefix = {"full": "", "sliding-window": "swa_"}
    for name, where in kinds.items():
        if not where:
            continue
        p = prefix[name]
        heads = c.int(f"{p}num_attention_heads")
        kv = c.int(f"{p}num_key_value_heads")
        head_dim = c.int(f"{p}head_dim")
        v_dim = c.int(f"{p}v_head_dim", default=head_dim)  # getattr default (mimo_v2.py:889, 910)
        qkv_n, o_k = _qkv(heads, kv, head_dim, v_dim, flags.attn_tp, p)
        how = f"{len(where)} {name} layers, attention tp {flags.attn_tp}"
        # mimo_v2.py:714-733: QKVParallelLinear and RowParallelLinear on the attention-TP group.
        if not skipped(where, "self_attn.qkv_proj"):
            linear(result, c, flags, f"qkv_proj ({how}: {heads}/{kv} heads)", qkv_n, hidden)
        if not skipped(where, "self_attn.o_proj"):
            linear(result, c, flags, f"o_proj ({how})", hidden, o_k)
        else:
            result.left_out.append(f"o_proj of the {name} layers: BF16 (quantization_config.ignored_layers)")

    dense = [i for i in range(layers) if not moe[i]]
    if dense:
        # mimo_v2.py:935-945: replicated when --moe-dense-tp-size 1 (layout.py:83-84), else the full tp.
        dense_tp = flags.moe_dense_tp_size or flags.tp
        inter = divide(c.int("intermediate_size"), dense_tp, "intermediate_size")
        how = f"{len(dense)} dense layers, tp {dense_tp}"
        if not skipped(dense, "mlp.gate_up_proj"):
            linear(result, c, flags, f"dense gate_up_proj ({how})", 2 * inter, hidden)
        if not skipped(dense, "mlp.down_proj"):
            linear(result, c, flags, f"dense down_proj ({how})", hidden, inter)
    if len(dense) < layers:
        # mimo_v2.py:448-460: routed experts only (no shared), Triton unless DeepGEMM runs them.
        gemms.routed_experts(result, c, flags, c.int("n_routed_experts"), 0, env)
    gemms.note_overlap(result, flags)
    return result


def _qkv(heads: int, kv: int, head_dim: int, v_dim: int, attn_tp: int, p: str) -> tuple[int, int]:
    """Per-rank QKV output width and o_proj input width (mimo_v2.py:688-712)."""
    local_heads = divide(heads, attn_tp, f"{p}num_attention_heads")
    if kv >= attn_tp and kv % attn_tp or kv < attn_tp and (kv == 0 or attn_tp % kv):
        raise PlanError(f"{kv} KV heads neither divide nor are divided by attention tp {attn_tp}",
                        f"{p}num_key_value_heads")
    local_kv = max(1, kv // attn_tp)
    return local_heads * head_dim + local_kv * (head_dim + v_dim), local_heads * v_dim
