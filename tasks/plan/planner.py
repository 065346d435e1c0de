"""Which DeepGEMM GEMMs an sglang 0.5.23 server runs, from its config and launch flags.

Pure: reads a config dict, ServerFlags and the plan-affecting env, returns shapes, each
with the layers that use it and the rule that put it there (tasks/plan/deepseek.py,
tasks/plan/mimo.py, tasks/plan/gqa_moe.py). Architectures it does not know need the fallback path.
"""

from __future__ import annotations

from tasks.plan import deepseek, gemms, gqa_moe, mimo
from tasks.plan.gemms import NO_PLAN, Fields, GemmShape, Kind, Plan, PlanEnv, PlanError
from tasks.plan.launch_args import ServerFlags

__all__ = ["NO_PLAN", "GemmShape", "Kind", "Plan", "PlanEnv", "PlanError", "plan"]


_NO_ENV = PlanEnv()
# Each architecture's packed_modules_mapping: fused linears as their checkpoint shards.
PACKED = {**{arch: deepseek.PACKED for arch in deepseek.ARCHITECTURES}, **gqa_moe.PACKED}


def plan(config: dict, flags: ServerFlags, env: PlanEnv = _NO_ENV, gpu_memory_mib: int | None = None) -> Plan:
    """`gpu_memory_mib`: the serving GPU's memory, which sets sglang's decode graph sizes (None: assume 60-160 GiB)."""
    arch = gemms.architecture(config)
    if arch not in (*deepseek.ARCHITECTURES, *mimo.ARCHITECTURES, *gqa_moe.ARCHITECTURES):
        raise PlanError(f"{NO_PLAN} (architecture {arch})", "architectures", needs_fallback=True)
    model_type = config.get("model_type")
    known = {**deepseek.MODEL_TYPES, **mimo.MODEL_TYPES, **gqa_moe.MODEL_TYPES}[arch]
    if model_type is not None and model_type not in known:
        # The architecture alone does not say the config is the one its planner restates.
        raise PlanError(f"{NO_PLAN} (model_type {model_type!r} with architecture {arch}, which jitwarm plans "
                        f"for model_type {' or '.join(map(repr, known))})", "model_type", needs_fallback=True)
    kind = gemms.block_kind(config)
    gemms.check_a2a(flags)
    c = Fields(config, arch, kind, gemms.skipped_of(config, PACKED.get(arch)))
    if arch in mimo.ARCHITECTURES:
        result = mimo.plan(c, flags, env)
    elif arch in gqa_moe.ARCHITECTURES:
        result = gqa_moe.plan(c, flags, env)
    else:
        result = deepseek.plan(c, flags, env, gpu_memory_mib)
    if kind is Kind.BLOCK32:
        result.left_out.append("[32, 32]-block linears are planned as Hopper (SM90) runs them; a Blackwell (SM100) "
                               "server runs them on Triton unless --fp8-gemm-backend deep_gemm with UE8M0 "
                               "scales (fp8_utils.py:716-729)")
    if flags.speculative_algorithm:
        result.not_covered.append(f"--speculative-algorithm {flags.speculative_algorithm}: the draft "
                                  "model's GEMMs (MTP / NextN layers) are not planned")
    return result
