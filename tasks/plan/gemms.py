"""What a shape plan is made of, and the rules every architecture shares.

Pure. Each rule cites the sglang 0.5.23 source it restates (paths under python/sglang/srt/).
"""

from __future__ import annotations

from enum import Enum

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


class Fields:
    """Typed access to config fields with one-line errors naming the field."""

    def __init__(self, config: dict, arch: str, linear_kind: Kind):
        self._config, self.arch, self.linear_kind = config, arch, linear_kind

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
    if not isinstance(quant, dict) or quant.get("quant_method") != "fp8":
        raise PlanError(f"{NO_PLAN} (not a block-FP8 checkpoint)", "quantization_config", needs_fallback=True)
    got = list(quant.get("weight_block_size") or [])
    if got not in ([128, 128], [32, 32]):
        raise PlanError(f"{NO_PLAN} (weight_block_size {got}, planner knows [128, 128] and [32, 32])",
                        "quantization_config.weight_block_size", needs_fallback=True)
    return Kind.BLOCK32 if got == [32, 32] else Kind.NORMAL


def divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise PlanError(f"{what} {total} is not divisible by {parts}")
    return total // parts


# quantization/fp8_utils.py:1170-1182: with --fp8-gemm-backend auto the linears take DeepGEMM first, whenever it is
# enabled. flashinfer_deepgemm keeps FlashInfer for 1 <= M < 32 and hands every other M to DeepGEMM
# (fp8_utils.py:1331-1349), whose first call sweeps the whole M list as under auto.
_DEEPGEMM_FP8_GEMM_BACKENDS = ("auto", "deep_gemm", "flashinfer_deepgemm")


def linear(result: Plan, c: Fields, flags: ServerFlags, layer: str, n: int, k: int) -> None:
    """Block-FP8 linears go to DeepGEMM when the backend is DeepGEMM's and the output BF16, with
    N % 64 == 0 and K % 128 == 0 for [128, 128] blocks, N % 8 == 0 and K % 32 == 0 for [32, 32]
    blocks on SM90 (fp8_utils.py:1449-1459 _deepgemm_block_fp8_supported); else Triton serves them."""
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
                   env: PlanEnv) -> None:
    """The routed experts' grouped GEMMs, when DeepGEMM runs them (else Triton runs them).

    `shared_slots`: shared experts fused into the routed MoE as extra experts."""
    auto_deepgemm = flags.moe_runner_backend == "auto" and flags.moe_a2a_backend in DEEPGEMM_A2A
    if flags.moe_runner_backend != "deep_gemm" and not auto_deepgemm:
        result.left_out.append(f"routed experts: runner {flags.moe_runner_backend} with {flags.moe_a2a_backend} "
                               "all-to-all is not DeepGEMM (quantization/fp8.py:1520-1541)")
        return
    if c.linear_kind is Kind.BLOCK32:
        raise PlanError(f"{NO_PLAN} (DeepGEMM routed experts of a [32, 32]-block checkpoint)",
                        "quantization_config.weight_block_size", needs_fallback=True)
    # deepseek_v2.py:749-755, mimo_v2.py:448-449: redundant experts are extra physical experts.
    groups = divide(routed + shared_slots + flags.ep_num_redundant_experts, flags.ep,
                    "experts (routed + fused shared + redundant)")
    inter = divide(c.int("moe_intermediate_size"), flags.tp // flags.ep, "moe_intermediate_size")
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
