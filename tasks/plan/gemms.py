"""What a shape plan is made of, and the rules every architecture shares.

Pure. Each rule cites the sglang 0.5.23 source it restates (paths under python/sglang/srt/).
"""

from __future__ import annotations

from enum import Enum

import re

import msgspec

from tasks.plan.launch_args import ServerFlags

NO_PLAN = "no shape plan; needs the fallback path"


class Kind(str, Enum):
    """sglang's DeepGemmKernelType names (compile_utils.py:113-120), so plans read like its logs."""

    NORMAL = "GEMM_NT_F8F8BF16"
    CONTIG = "GROUPED_GEMM_NT_F8F8BF16_CONTIG"
    MASKED = "GROUPED_GEMM_NT_F8F8BF16_MASKED"
    BLOCK32 = "GEMM_NT_F8F8BF16_BLOCK32"  # FP8 with [32, 32] blocks: recipe (1, 32, 32)
    BF16_CONTIG = "GROUPED_GEMM_NT_BF16_CONTIG"
    BF16_MASKED = "GROUPED_GEMM_NT_BF16_MASKED"
    BF16F32 = "GEMM_NT_BF16BF16F32"
    # The DSA indexer's DeepGEMM kernels (tasks/plan/indexer.py): not GEMMs, and not in sglang's
    # warmup sweep. Their shape reads n = heads, k = head dim, groups = next_n.
    MQA_LOGITS = "FP8_MQA_LOGITS"
    PAGED_MQA_LOGITS = "FP8_PAGED_MQA_LOGITS"

    @property
    def indexer(self) -> bool:
        return self in (Kind.MQA_LOGITS, Kind.PAGED_MQA_LOGITS)

    @property
    def token_scales(self) -> bool:
        """FP8 with 1 x 128 FP32 token scales, which DeepGEMM transposes with a kernel of its own on
        SM90 before it picks the GEMM: compile workers pass them pre-transposed and probe the
        transpose once per shape (tasks/runner/child/executors.py)."""
        return self in (Kind.NORMAL, Kind.CONTIG, Kind.MASKED)

    @property
    def contiguous(self) -> bool:
        """Swept only at M divisible by the layout's alignment (compile_utils.py:207-212)."""
        return self in (Kind.CONTIG, Kind.BF16_CONTIG)

    @property
    def short(self) -> str:
        return self.name.lower()


class GemmShape(msgspec.Struct, frozen=True, order=True):
    kind: Kind
    n: int
    k: int
    groups: int = 1

    @property
    def label(self) -> str:
        return f"{self.kind.short}-{self.n}x{self.k}-g{self.groups}"

    @property
    def params(self) -> str:
        if self.kind.indexer:
            return f"heads={self.n} head_dim={self.k} next_n={self.groups}"
        return f"N={self.n} K={self.k} groups={self.groups}"


class Plan(msgspec.Struct):
    """Shapes with the layers that use them (each naming the rule that put it there), in a
    stable order; the rules that kept GEMMs off DeepGEMM; what the server compiles at start
    that this plan does not warm; what it compiles later, at run time.

    `calls`: the values a shape is called at when they are not the launch's GEMM M list (the
    indexer's rows and prefill lengths)."""

    uses: dict[GemmShape, list[str]] = msgspec.field(default_factory=dict)
    left_out: list[str] = msgspec.field(default_factory=list)
    not_covered: list[str] = msgspec.field(default_factory=list)
    calls: dict[GemmShape, tuple[int, ...]] = msgspec.field(default_factory=dict)
    later: list[str] = msgspec.field(default_factory=list)

    def add(self, shape: GemmShape, layer: str, calls: tuple[int, ...] | None = None) -> None:
        self.uses.setdefault(shape, []).append(layer)
        if calls is not None:
            self.calls[shape] = tuple(sorted(set(self.calls.get(shape, ())) | set(calls)))

    @property
    def shapes(self) -> list[GemmShape]:
        return sorted(self.uses)


class PlanEnv(msgspec.Struct, frozen=True):
    """The server's environment variables that change which GEMMs it runs."""

    use_deepgemm_bmm: bool = False  # SGLANG_USE_DEEPGEMM_BMM
    shared_expert_tp1: bool = False  # SGLANG_SHARED_EXPERT_TP1
    disable_dsa_indexer_fusion: bool = False  # SGLANG_DISABLE_DSA_INDEXER_FUSION
    bf16_fp32_gemm_algo: str = "cublas"  # SGLANG_OPT_BF16_FP32_GEMM_ALGO
    fp8_paged_mqa_logits_torch: bool = False  # SGLANG_FP8_PAGED_MQA_LOGITS_TORCH
    deepgemm_standard_layout: str = "auto"  # SGLANG_DEEPGEMM_STANDARD_LAYOUT: auto, masked or compact


class PlanError(ValueError):
    """The config cannot be planned; `field` names the config key at fault, if any.

    `needs_fallback` marks configs the planner does not know (as opposed to broken ones):
    those are warmed by running the server itself.
    """

    def __init__(self, message: str, field: str | None = None, needs_fallback: bool = False):
        super().__init__(message)
        self.field = field
        self.needs_fallback = needs_fallback


# Config fields that size a GEMM: 0 is no model sglang could load, and would plan N=0 or K=0 shapes.
_DIMENSIONS = frozenset({
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "v_head_dim",
    "intermediate_size", "moe_intermediate_size", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "num_experts", "num_local_experts", "index_n_heads", "index_head_dim",
    "swa_num_attention_heads", "swa_num_key_value_heads", "swa_head_dim", "swa_v_head_dim"})


class Fields:
    """Typed access to config fields with one-line errors naming the field; `skipped` says which
    modules the checkpoint keeps unquantized (so off DeepGEMM's FP8 GEMMs)."""

    def __init__(self, config: dict, arch: str, linear_kind: Kind, skipped: "Skipped | None" = None):
        self._config, self.arch, self.linear_kind = config, arch, linear_kind
        self.skipped = skipped or Skipped([])

    def has(self, name: str) -> bool:
        return name in self._config

    def flag(self, name: str, default: bool | None) -> bool:
        value = self._config.get(name, default)
        if value is None:
            raise PlanError("required: the planner cannot tell without it (true or false)", name)
        if not isinstance(value, bool):
            raise PlanError(f"expected true or false, got {value!r}", name)
        return value

    def int(self, name: str, default=None, allow_none: bool = False):
        value = self._config.get(name, default)
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PlanError(f"expected a non-negative integer, got {value!r}", name)
        if value == 0 and name in _DIMENSIONS:
            raise PlanError("expected a positive integer, got 0 (no model has a zero-sized dimension)", name)
        return value

    def int_list(self, name: str, length: int) -> list[int]:
        value = self._config.get(name)
        if (not isinstance(value, list) or len(value) != length
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            shown = value if not isinstance(value, list) else f"a list of {len(value)}"
            raise PlanError(f"expected a list of {length} integers (one per layer), got {shown!r}", name)
        return value


def architecture(config: dict) -> str:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise PlanError(f"{NO_PLAN} (no architectures list)", "architectures", needs_fallback=True)
    return archs[0]


def block_kind(config: dict) -> Kind:
    """The linears' kernel type from the checkpoint's FP8 block: [128, 128] NORMAL, [32, 32]
    BLOCK32 (kernels/ops/gemm/fp8_kernel.py:30-40 passes recipe (1, 32, 32); entrypoint.py:228-232)."""
    quant = config.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method == "compressed-tensors":
        got = compressed_tensors_block(quant)
    elif method == "fp8":
        got = list(quant.get("weight_block_size") or [])
    else:
        raise PlanError(f"{NO_PLAN} (not a block-FP8 checkpoint)", "quantization_config", needs_fallback=True)
    if got not in ([128, 128], [32, 32]):
        raise PlanError(f"{NO_PLAN} (weight_block_size {got}, planner knows [128, 128] and [32, 32])",
                        "quantization_config.weight_block_size", needs_fallback=True)
    return Kind.BLOCK32 if got == [32, 32] else Kind.NORMAL


def compressed_tensors_block(quant: dict) -> list:
    """The weight block of a compressed-tensors checkpoint whose Linear scheme is block FP8 W8A8
    (compressed_tensors.py:527-557 _is_fp8_w8a8: float, symmetric, static block weights; float inputs),
    which compressed_tensors_w8a8_fp8.py:52-57 runs through the block-FP8 dispatch (fp8_utils.py)."""
    groups = quant.get("config_groups")
    schemes = [g for g in groups.values() if isinstance(g, dict) and "Linear" in (g.get("targets") or [])] \
        if isinstance(groups, dict) else []
    if len(schemes) != 1:
        raise PlanError(f"{NO_PLAN} (compressed-tensors: {len(schemes)} schemes target Linear, the planner "
                        "knows one block-FP8 scheme)", "quantization_config.config_groups", needs_fallback=True)
    weights, inputs = schemes[0].get("weights") or {}, schemes[0].get("input_activations") or {}
    block_fp8 = (weights.get("type") == "float" and weights.get("num_bits") == 8 and weights.get("strategy") == "block"
                 and weights.get("symmetric", True) and not weights.get("dynamic", False)
                 and inputs.get("type") == "float" and inputs.get("num_bits") == 8)
    if not block_fp8:
        shown = {k: weights.get(k) for k in ("type", "num_bits", "strategy")}
        raise PlanError(f"{NO_PLAN} (compressed-tensors weights {shown} with inputs "
                        f"{inputs.get('type')}/{inputs.get('num_bits')}: not block FP8 W8A8, so no DeepGEMM "
                        "linears the planner knows)", "quantization_config.config_groups", needs_fallback=True)
    return list(weights.get("block_structure") or [])


class Skipped:
    """Whether the checkpoint keeps a module unquantized, by sglang's matching of its quantization config.

    fp8 (`ignored_layers` / `modules_to_not_convert`): quantization/fp8.py:354-364 adds the
    "model."-stripped and -prefixed forms; quantization/utils.py:48-59 matches on dotted boundaries,
    70-105 checks every shard of a fused linear. compressed-tensors (`ignore`):
    compressed_tensors/utils.py:24-100 matches exactly, by "re:" regex, or as a dotted suffix.
    `shards`: the model's packed_modules_mapping (fp8 falls back to qkv_proj and gate_up_proj).
    """

    def __init__(self, ignored: list[str], compressed: bool = False, shards: dict | None = None):
        self.compressed = compressed
        if compressed:
            self._ignored = list(ignored)
        else:
            self._ignored = [form for entry in ignored
                             for form in (entry.removeprefix("model."), "model." + entry.removeprefix("model."))]
        self._shards = dict(shards or {})
        if not compressed:
            self._shards = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj"),
                            **self._shards}

    def __bool__(self) -> bool:
        return bool(self._ignored)

    def __call__(self, layer_ids, module: str) -> bool:
        """True when every listed layer keeps `module` unquantized (then no layer needs its FP8 GEMM)."""
        return bool(self._ignored) and all(self.one(f"model.layers.{i}.{module}") for i in layer_ids)

    def one(self, prefix: str) -> bool:
        proj = prefix.rsplit(".", 1)[-1]
        shards = [prefix[: -len(proj)] + s for s in self._shards.get(proj, (proj,))]
        states = {self._match_any(shard) for shard in shards}
        if len(states) > 1:
            raise PlanError(f"some but not all shards of {prefix} are unquantized; sglang refuses such a "
                            "checkpoint", "quantization_config.ignored_layers")
        return states.pop()

    def _match_any(self, prefix: str) -> bool:
        if self.compressed:
            return any(re.match(t[3:], prefix) if t.startswith("re:") else t == prefix or prefix.endswith("." + t)
                       for t in self._ignored)
        return any(self._fp8_match(ignored, prefix) for ignored in self._ignored)

    @staticmethod
    def _fp8_match(ignored: str, prefix: str) -> bool:
        ignored = ignored.rstrip(".")
        return ignored == prefix or prefix.startswith(ignored + ".") or f".{ignored}." in f".{prefix}."


def skipped_of(config: dict, shards: dict | None = None) -> Skipped:
    """The unquantized-module matcher of `config`'s quantization_config (already known to be block FP8)."""
    quant = config["quantization_config"]
    if quant.get("quant_method") == "compressed-tensors":
        key = "ignore"
    else:
        key = "ignored_layers" if "ignored_layers" in quant else "modules_to_not_convert"
    value = quant.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"expected a list of module names, got {value!r}", f"quantization_config.{key}")
    for entry in value:
        if entry.startswith("re:"):
            try:
                re.compile(entry[3:])
            except re.error as exc:
                raise PlanError(f"{entry!r} is not a regular expression: {exc}", f"quantization_config.{key}") from None
    return Skipped(value, compressed=key == "ignore", shards=shards)


def divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise PlanError(f"{what} {total} is not divisible by {parts}")
    return total // parts


# quantization/fp8_utils.py:1170-1182: with --fp8-gemm-backend auto the linears take DeepGEMM first, whenever it is
# enabled. flashinfer_deepgemm keeps FlashInfer for 1 <= M < 32 and hands every other M to DeepGEMM
# (fp8_utils.py:1331-1349), whose first call sweeps the whole M list as under auto.
_DEEPGEMM_FP8_GEMM_BACKENDS = ("auto", "deep_gemm", "flashinfer_deepgemm")


def linear(result: Plan, c: Fields, flags: ServerFlags, layer: str, n: int, k: int,
           module: str | None = None, layers=None) -> None:
    """Block-FP8 linears go to DeepGEMM when the backend is DeepGEMM's and the output BF16, with
    N % 64 == 0 and K % 128 == 0 for [128, 128] blocks, N % 8 == 0 and K % 32 == 0 for [32, 32]
    blocks on SM90 (fp8_utils.py:1449-1459 _deepgemm_block_fp8_supported); else Triton serves them.

    `module` (e.g. "self_attn.o_proj") in `layers` (layer ids): a module every one of those layers
    keeps unquantized (quantization/fp8.py:396-400) runs in BF16, off DeepGEMM."""
    if module is not None and layers and c.skipped(layers, module):
        key = "ignore" if c.skipped.compressed else "ignored_layers"
        result.left_out.append(f"{layer} {n}x{k}: unquantized (quantization_config.{key} names {module})")
        return
    block32 = c.linear_kind is Kind.BLOCK32
    fits = n % 8 == 0 and k % 32 == 0 if block32 else n % 64 == 0 and k % 128 == 0
    # fp8_utils.py:716-734: [32, 32] blocks take DeepGEMM on SM90 only with backend auto or deep_gemm.
    backends = ("auto", "deep_gemm") if block32 else _DEEPGEMM_FP8_GEMM_BACKENDS
    if flags.fp8_gemm_backend in backends and fits:
        result.add(GemmShape(c.linear_kind, n, k), layer)
    else:
        rule = "N % 8 / K % 32" if block32 else "N % 64 / K % 128"
        result.left_out.append(f"{layer} {n}x{k}: Triton (--fp8-gemm-backend {flags.fp8_gemm_backend}, "
                               f"or {rule} not 0: fp8_utils.py:1449-1459)")


# layers/moe/utils.py:656-665: A2A combine happens inside a DeepEP-family dispatcher.
DEEPEP_CLASS_A2A = ("deepep", "deepep_v2", "mooncake", "mori", "pplx")
# The all-to-all backends whose expert GEMMs the planner knows: DeepGEMM behind DeepEPMoE
# (ep_moe/layer.py:352-365) with the auto runner (quantization/fp8.py:1520-1541;
# moe_hook.py:400-410 deepep_v2, 596-608 pplx).
DEEPGEMM_A2A = ("deepep", "deepep_v2", "mooncake", "nixl", "pplx")


def check_a2a(flags: ServerFlags) -> None:
    if flags.moe_a2a_backend not in ("none", *DEEPGEMM_A2A):
        raise PlanError(f"{NO_PLAN} (--moe-a2a-backend {flags.moe_a2a_backend})", needs_fallback=True)


def routed_experts(result: Plan, c: Fields, flags: ServerFlags, routed: int, shared_slots: int,
                   env: PlanEnv, inter_key: str = "moe_intermediate_size", module: str | None = None,
                   layers=None, redundant: bool = True) -> None:
    """The routed experts' grouped GEMMs, when DeepGEMM runs them (else Triton runs them).

    `shared_slots`: shared experts fused into the routed MoE as extra experts; `inter_key`: the
    config field of one expert's intermediate size; `module`/`layers` as for linear(); `redundant`:
    whether the model builds --ep-num-redundant-experts extra physical experts."""
    if module is not None and layers and c.skipped(layers, module):
        result.left_out.append(f"routed experts: unquantized (the quantization config names {module})")
        return
    auto_deepgemm = flags.moe_runner_backend == "auto" and flags.moe_a2a_backend in DEEPGEMM_A2A
    if flags.moe_runner_backend != "deep_gemm" and not auto_deepgemm:
        result.left_out.append(f"routed experts: runner {flags.moe_runner_backend} with {flags.moe_a2a_backend} "
                               "all-to-all is not DeepGEMM (quantization/fp8.py:1520-1541)")
        return
    if c.linear_kind is Kind.BLOCK32:
        raise PlanError(f"{NO_PLAN} (DeepGEMM routed experts of a [32, 32]-block checkpoint)",
                        "quantization_config.weight_block_size", needs_fallback=True)
    if c.skipped.compressed:
        # compressed_tensors_w8a8_fp8_moe.py:341-365 runs only Triton, aiter or FlashInfer itself.
        raise PlanError(f"{NO_PLAN} (DeepGEMM routed experts of a compressed-tensors checkpoint, "
                        f"runner {flags.moe_runner_backend}, {flags.moe_a2a_backend} all-to-all)",
                        "quantization_config", needs_fallback=True)
    # deepseek_v2.py:749-755, mimo_v2.py:448-449: redundant experts are extra physical experts.
    extra = flags.ep_num_redundant_experts if redundant else 0
    groups = divide(routed + shared_slots + extra, flags.ep, "experts (routed + fused shared + redundant)")
    inter = divide(c.int(inter_key), flags.tp // flags.ep, inter_key)
    why = f"{groups} experts per rank, {flags.moe_a2a_backend} all-to-all, runner {flags.moe_runner_backend}"
    for kind in routed_kinds(flags, env.deepgemm_standard_layout):
        result.add(GemmShape(kind, 2 * inter, c.int("hidden_size"), groups), f"routed experts gate_up ({why})")
        result.add(GemmShape(kind, c.int("hidden_size"), inter, groups), f"routed experts down ({why})")


def routed_kinds(flags: ServerFlags, standard_layout: str = "auto") -> list[Kind]:
    """Which grouped layouts the expert GEMMs use; `standard_layout`: SGLANG_DEEPGEMM_STANDARD_LAYOUT."""
    a2a = flags.moe_a2a_backend
    if a2a == "none" and standard_layout == "compact":
        # moe_runner/deep_gemm.py:224-229, 1027-1030: the standard dispatch never takes the masked layout.
        return [Kind.CONTIG]
    if a2a in ("mooncake", "nixl", "pplx"):
        return [Kind.MASKED]  # low-latency dispatch only (token_dispatcher/mooncake.py:107-110, pplx.py:51)
    if a2a == "deepep" and flags.deepep_mode == "normal":
        return [Kind.CONTIG]  # moe/utils.py:268-289 DeepEPMode
    if a2a == "deepep" and flags.deepep_mode == "low_latency":
        return [Kind.MASKED]
    # deepep auto resolves per batch; deepep_v2 and the standard dispatch pick masked or
    # contiguous per call (moe_runner/deep_gemm.py:199-253, 361-395): both. "masked" for the
    # standard dispatch still falls back to compact for activations it cannot lay out (212-222).
    return [Kind.CONTIG, Kind.MASKED]


def note_overlap(result: Plan, flags: ServerFlags) -> None:
    """Kernels built for fewer SMs are separate binaries (the SM count is a template parameter)."""
    if flags.enable_two_batch_overlap:
        result.not_covered.append(
            "two-batch overlap runs DeepGEMM on the SMs DeepEP leaves free (batch_overlap/operations_strategy.py:18-26, "
            "two_batch_overlap.py:992-996): those kernels are built at first use, not warmed")
    if flags.enable_single_batch_overlap:
        result.not_covered.append(
            "single-batch overlap runs the masked expert GEMMs and the shared experts on fewer SMs "
            "(deep_gemm_wrapper/entrypoint.py:69-74, models/deepseek_v2.py:1646-1650): those kernels are built at "
            "first use, not warmed")
