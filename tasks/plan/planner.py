"""Which DeepGEMM GEMMs a DeepSeek-style server runs, from its config and launch flags.

Pure: reads a config dict and ServerFlags, returns shapes. Derived from sglang's
deepseek_v2.py, nsa_indexer.py and the linear/MoE dispatch rules (FACTS.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tasks.plan.launch_args import ServerFlags

NO_PLAN = "no shape plan; needs the fallback path"

_MLA_ARCHITECTURES = {
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "DeepseekV32ForCausalLM",
    "GlmMoeDsaForCausalLM",
}


class Kind(str, Enum):
    """sglang's DeepGemmKernelType names, so plans read like its logs."""

    NORMAL = "GEMM_NT_F8F8BF16"
    CONTIG = "GROUPED_GEMM_NT_F8F8BF16_CONTIG"
    MASKED = "GROUPED_GEMM_NT_F8F8BF16_MASKED"

    @property
    def short(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, order=True)
class GemmShape:
    kind: Kind
    n: int
    k: int
    groups: int = 1

    @property
    def label(self) -> str:
        return f"{self.kind.short}-{self.n}x{self.k}-g{self.groups}"


@dataclass
class Plan:
    """Shapes with the layers that use them, in a stable order."""

    uses: dict[GemmShape, list[str]] = field(default_factory=dict)

    def add(self, shape: GemmShape, layer: str) -> None:
        self.uses.setdefault(shape, []).append(layer)

    @property
    def shapes(self) -> list[GemmShape]:
        return sorted(self.uses)


class PlanError(ValueError):
    """The config cannot be planned; `field` names the config key at fault, if any.

    `needs_fallback` marks configs the planner does not know (as opposed to broken ones):
    those are warmed by running the server itself.
    """

    def __init__(self, message: str, field: str | None = None, needs_fallback: bool = False):
        super().__init__(message)
        self.field = field
        self.needs_fallback = needs_fallback


def plan(config: dict, flags: ServerFlags, use_deepgemm_bmm: bool = False) -> Plan:
    arch = _architecture(config)
    if arch not in _MLA_ARCHITECTURES:
        raise PlanError(f"{NO_PLAN} (architecture {arch})", "architectures", needs_fallback=True)
    _require_block_fp8(config)
    c = _Fields(config)
    result = Plan()
    _attention(result, c, flags, use_deepgemm_bmm)
    _mlp(result, c, flags)
    return result


def _architecture(config: dict) -> str:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise PlanError(f"{NO_PLAN} (no architectures list)", "architectures", needs_fallback=True)
    return archs[0]


def _require_block_fp8(config: dict) -> None:
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "fp8":
        raise PlanError(f"{NO_PLAN} (not a block-FP8 checkpoint)", "quantization_config", needs_fallback=True)
    if list(quant.get("weight_block_size") or []) != [128, 128]:
        got = quant.get("weight_block_size")
        raise PlanError(f"{NO_PLAN} (weight_block_size {got}, planner knows [128, 128])",
                        "quantization_config.weight_block_size", needs_fallback=True)


class _Fields:
    """Typed access to config fields with one-line errors naming the field."""

    def __init__(self, config: dict):
        self._config = config

    def int(self, name: str, default=None, allow_none: bool = False):
        value = self._config.get(name, default)
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PlanError(f"expected a non-negative integer, got {value!r}", name)
        return value


def _divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise PlanError(f"{what} {total} is not divisible by {parts}")
    return total // parts


def _linear(result: Plan, layer: str, n: int, k: int) -> None:
    """Block-FP8 linears go to DeepGEMM when the output is BF16, N % 64 == 0 and K % 128 == 0."""
    if n % 64 == 0 and k % 128 == 0:
        result.add(GemmShape(Kind.NORMAL, n, k), layer)


def _attention(result: Plan, c: _Fields, flags: ServerFlags, use_deepgemm_bmm: bool) -> None:
    hidden = c.int("hidden_size")
    heads = _divide(c.int("num_attention_heads"), flags.attn_tp, "num_attention_heads")
    q_lora = c.int("q_lora_rank", allow_none=True)
    kv_lora = c.int("kv_lora_rank")
    nope, rope, v_dim = c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim"), c.int("v_head_dim")

    if q_lora:
        _linear(result, "fused_qkv_a_proj", q_lora + kv_lora + rope, hidden)
        _linear(result, "q_b_proj", heads * (nope + rope), q_lora)
    else:
        _linear(result, "q_proj", heads * (nope + rope), hidden)
        _linear(result, "kv_a_proj_with_mqa", kv_lora + rope, hidden)
    _linear(result, "kv_b_proj", heads * (nope + v_dim), kv_lora)
    _linear(result, "o_proj", hidden, heads * v_dim)

    if c.int("index_topk", default=None, allow_none=True):
        # DSA indexer (V3.2, GLM-5): replicated block-FP8 linears.
        index_heads, index_dim = c.int("index_n_heads"), c.int("index_head_dim")
        if q_lora:
            _linear(result, "indexer.wq_b", index_heads * index_dim, q_lora)
        _linear(result, "indexer.wk", index_dim, hidden)

    if use_deepgemm_bmm:
        # SGLANG_USE_DEEPGEMM_BMM: MLA absorbed w_kc / w_vc as masked grouped GEMMs per head.
        result.add(GemmShape(Kind.MASKED, kv_lora, nope, heads), "w_kc (bmm)")
        result.add(GemmShape(Kind.MASKED, v_dim, kv_lora, heads), "w_vc (bmm)")


def _mlp(result: Plan, c: _Fields, flags: ServerFlags) -> None:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    first_dense = min(c.int("first_k_dense_replace", default=0), layers)
    routed = c.int("n_routed_experts", default=None, allow_none=True) or 0

    if first_dense > 0 or not routed:
        dense_tp = flags.moe_dense_tp_size or flags.tp
        inter = _divide(c.int("intermediate_size"), dense_tp, "intermediate_size")
        _linear(result, "dense gate_up_proj", 2 * inter, hidden)
        _linear(result, "dense down_proj", hidden, inter)
    if not routed or layers <= first_dense:
        return

    shared = c.int("n_shared_experts", default=0, allow_none=True) or 0
    moe_inter = c.int("moe_intermediate_size")
    moe_tp = flags.tp // flags.ep
    # sglang fuses shared experts into the routed MoE unless DeepEP or EP is in use.
    fused = shared if (shared and not flags.deepep and flags.ep == 1
                       and not flags.disable_shared_experts_fusion) else 0

    if flags.deepep or flags.moe_runner_backend == "deep_gemm":
        groups = _divide(routed + fused, flags.ep, "n_routed_experts")
        inter = _divide(moe_inter, moe_tp, "moe_intermediate_size")
        for kind in _routed_kinds(flags):
            result.add(GemmShape(kind, 2 * inter, hidden, groups), "routed experts gate_up")
            result.add(GemmShape(kind, hidden, inter, groups), "routed experts down")

    if shared and not fused:
        # DeepEP runs the shared experts unsharded (tp_size=1).
        shared_tp = 1 if flags.deepep else flags.tp
        inter = _divide(moe_inter * shared, shared_tp, "moe_intermediate_size * n_shared_experts")
        _linear(result, "shared_experts gate_up_proj", 2 * inter, hidden)
        _linear(result, "shared_experts down_proj", hidden, inter)


def _routed_kinds(flags: ServerFlags) -> list[Kind]:
    """DeepEP normal mode dispatches contiguously, low-latency mode masked; auto uses both."""
    if flags.deepep and flags.deepep_mode == "normal":
        return [Kind.CONTIG]
    if flags.deepep and flags.deepep_mode == "low_latency":
        return [Kind.MASKED]
    return [Kind.CONTIG, Kind.MASKED]
