"""Server launch args: normalisation, hashing and the few flags that change DeepGEMM shapes.

Only flags that change which GEMMs a server runs, or its M list, are interpreted;
every other flag is carried along untouched (it still counts in the hash). Spellings
follow sglang 0.5.23 (srt/arg_groups/fields/*.py; argparse also takes unique prefixes
such as --tp and --dp). Flags that release removed are refused with their successor.
"""

from __future__ import annotations

import hashlib
import json

import msgspec

# flag -> (field, kind); aliases follow sglang's ServerArgs.
_VALUE_FLAGS = {
    "--tp": ("tp", int),
    "--tp-size": ("tp", int),
    "--tensor-parallel-size": ("tp", int),
    "--dp": ("dp", int),
    "--dp-size": ("dp", int),
    "--data-parallel-size": ("dp", int),
    # fields/parallel.py:81-88: attention DP groups inside the TP group.
    "--attn-dp-size": ("attn_dp_size", int),
    "--attention-data-parallel-size": ("attn_dp_size", int),
    "--ep-num-redundant-experts": ("ep_num_redundant_experts", int),
    "--ep": ("ep", int),
    "--ep-size": ("ep", int),
    "--expert-parallel-size": ("ep", int),
    "--moe-a2a-backend": ("moe_a2a_backend", str),
    "--moe-runner-backend": ("moe_runner_backend", str),
    "--moe-dense-tp-size": ("moe_dense_tp_size", int),
    "--chunked-prefill-size": ("chunked_prefill_size", int),
    "--deepep-mode": ("deepep_mode", str),
    "--fp8-gemm-backend": ("fp8_gemm_backend", str),
    "--speculative-algorithm": ("speculative_algorithm", str),
    # What the DSA indexer's DeepGEMM calls depend on (tasks/plan/indexer.py).
    "--speculative-num-steps": ("speculative_num_steps", int),
    "--speculative-eagle-topk": ("speculative_eagle_topk", int),
    "--speculative-num-draft-tokens": ("speculative_num_draft_tokens", int),
    "--dsa-paged-mqa-logits-backend": ("dsa_paged_mqa_logits_backend", str),
    "--cuda-graph-max-bs-decode": ("cuda_graph_max_bs_decode", int),
    "--max-running-requests": ("max_running_requests", int),
    "--pp-size": ("pp_size", int),
    "--pipeline-parallel-size": ("pp_size", int),
}
# Flags taking one or more integers (fields/exec_.py:644-647: Optional[List[int]]).
_LIST_FLAGS = {
    "--cuda-graph-bs-decode": "cuda_graph_bs_decode",
}
_BOOL_FLAGS = {
    # Deprecated spelling of --attn-dp-size (server_args.py:417-423, parallel_hook.py:39-61).
    "--enable-dp-attention": "enable_dp_attention",
    "--disable-shared-experts-fusion": "disable_shared_experts_fusion",
    "--enforce-shared-experts-fusion": "enforce_shared_experts_fusion",
    "--enable-two-batch-overlap": "enable_two_batch_overlap",
    "--enable-single-batch-overlap": "enable_single_batch_overlap",
    "--enable-deterministic-inference": "enable_deterministic_inference",
    # server_args.py:410-415: the deprecated spelling that disables both phases' graphs.
    "--disable-cuda-graph": "disable_cuda_graph",
    "--disable-decode-cuda-graph": "disable_decode_cuda_graph",
    "--disable-cuda-graph-padding": "disable_cuda_graph_padding",
}
# Flags older sglang releases took, gone from 0.5.23's argument parser.
_REMOVED = {
    "--enable-deepep-moe": "--moe-a2a-backend deepep",
    "--enable-ep-moe": "--ep-size <tp>",
}
_CHOICES = {
    "deepep_mode": ("auto", "normal", "low_latency"),
    # quantization/fp8_utils.py:433-444 Fp8GemmRunnerBackend
    "fp8_gemm_backend": ("auto", "flashinfer_trtllm", "flashinfer_cutlass", "flashinfer_cutedsl",
                         "flashinfer_deepgemm", "cutlass", "deep_gemm", "triton", "aiter"),
    "dsa_paged_mqa_logits_backend": ("auto", "deepgemm", "cutedsl", "aiter"),  # fields/exec_.py:379-385
}


class ArgsError(ValueError):
    """A launch arg that cannot be interpreted; the message is one line."""


# overrides.py:1578-1592: these all-to-all backends span experts over every rank (ep = tp).
EP_SPANNING_A2A = ("deepep", "deepep_v2", "mooncake", "nixl", "pplx", "mori", "megamoe", "flashinfer",
                   "flashinfer_megamoe", "ascend_fuseep")


class ServerFlags(msgspec.Struct, frozen=True):
    tp: int
    dp: int = 1  # data-parallel replicas: no effect on shapes
    attn_dp_size: int = 1
    ep: int = 1
    moe_a2a_backend: str = "none"
    moe_runner_backend: str = "auto"
    moe_dense_tp_size: int | None = None
    chunked_prefill_size: int | None = None
    deepep_mode: str = "auto"
    disable_shared_experts_fusion: bool = False
    enforce_shared_experts_fusion: bool = False
    enable_two_batch_overlap: bool = False
    enable_single_batch_overlap: bool = False
    ep_num_redundant_experts: int = 0
    fp8_gemm_backend: str = "auto"
    enable_deterministic_inference: bool = False
    speculative_algorithm: str | None = None
    speculative_num_steps: int | None = None
    speculative_eagle_topk: int | None = None
    speculative_num_draft_tokens: int | None = None
    dsa_paged_mqa_logits_backend: str = "auto"
    cuda_graph_max_bs_decode: int | None = None
    cuda_graph_bs_decode: tuple[int, ...] | None = None
    disable_cuda_graph: bool = False
    disable_decode_cuda_graph: bool = False
    disable_cuda_graph_padding: bool = False
    max_running_requests: int | None = None
    pp_size: int = 1

    @property
    def deepep(self) -> bool:
        return self.moe_a2a_backend == "deepep"

    @property
    def attn_tp(self) -> int:
        """Tensor-parallel width of attention (runtime_context.attn_tp_size_of): tp / attn_dp_size."""
        return self.tp // self.attn_dp_size


def normalize(args: list[str] | tuple[str, ...]) -> list[str]:
    """Split `--flag=value` into `--flag value` so both spellings hash the same."""
    out: list[str] = []
    for token in args:
        if token.startswith("--") and "=" in token:
            flag, value = token.split("=", 1)
            out += [flag, value]
        else:
            out.append(token)
    return out


def launch_hash(tp: int, args, env: dict[str, str], m_list) -> str:
    """Hex digest identifying a launch tuple; the target name carries its first 8 chars."""
    canonical = {
        "tp": tp,
        "args": normalize(args),
        "env": dict(sorted(env.items())),
        "m_list": list(m_list) if isinstance(m_list, (list, tuple)) else m_list,
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def parse(args, tp: int) -> ServerFlags:
    """Interpret the shape-relevant flags; `tp` is the launch tuple's own tp."""
    values: dict[str, object] = {}
    tokens = normalize(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _VALUE_FLAGS:
            field, kind = _VALUE_FLAGS[token]
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ArgsError(f"{token} expects a value")
            raw = tokens[i + 1]
            values[field] = _convert(token, raw, kind)
            if field in _CHOICES and values[field] not in _CHOICES[field]:
                allowed = ", ".join(_CHOICES[field])
                raise ArgsError(f"{token} expects one of {allowed}, got {json.dumps(raw)}")
            i += 2
            continue
        if token in _LIST_FLAGS:
            count = next((j for j, t in enumerate(tokens[i + 1:]) if t.startswith("--")), len(tokens) - i - 1)
            if count == 0:
                raise ArgsError(f"{token} expects one or more integers")
            values[_LIST_FLAGS[token]] = tuple(_convert(token, raw, int) for raw in tokens[i + 1:i + 1 + count])
            i += 1 + count
            continue
        if token in _BOOL_FLAGS:
            values[_BOOL_FLAGS[token]] = True
        elif token in _REMOVED:
            raise ArgsError(f"{token} was removed from sglang; use {_REMOVED[token]}")
        i += 1

    if "tp" in values and values["tp"] != tp:
        raise ArgsError(f"--tp {values['tp']} in args contradicts tp = {tp}")
    values["tp"] = tp
    if values.pop("enable_dp_attention", False) and values.get("attn_dp_size", 1) == 1:
        # parallel_hook.py:39-61: `--dp N --enable-dp-attention` is `--attn-dp-size N`.
        values["attn_dp_size"], values["dp"] = values.get("dp", 1), 1
    if values.get("moe_a2a_backend") in EP_SPANNING_A2A:
        values["ep"] = tp  # overrides.py:1610-1620: _a2a_ep_size
    flags = ServerFlags(**values)
    _check_divisibility(flags)
    return flags


def _convert(flag: str, raw: str, kind):
    if kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise ArgsError(f"{flag} expects an integer, got {json.dumps(raw)}") from None
        if value < 0 and flag == "--ep-num-redundant-experts":
            raise ArgsError(f"{flag} expects a non-negative integer, got {json.dumps(raw)}")
        if value < 1 and flag not in ("--chunked-prefill-size", "--ep-num-redundant-experts"):
            raise ArgsError(f"{flag} expects a positive integer, got {json.dumps(raw)}")
        return value
    return raw


def _check_divisibility(flags: ServerFlags) -> None:
    if flags.tp % flags.attn_dp_size:
        raise ArgsError(f"--attn-dp-size {flags.attn_dp_size} does not divide tp {flags.tp}")
    if flags.tp % flags.ep:
        raise ArgsError(f"--ep {flags.ep} does not divide tp {flags.tp}")
    if flags.moe_dense_tp_size not in (None, 1, flags.tp):
        # arg_groups/validation_hook.py:207-211
        raise ArgsError(f"--moe-dense-tp-size {flags.moe_dense_tp_size}: sglang takes only 1 or tp ({flags.tp})")
