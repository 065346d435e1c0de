"""Server launch args: normalisation, hashing, and the flags that change DeepGEMM shapes.

Args are parsed by sglang 0.5.23's own option table (sglang_table.py): unique prefixes such as
`--chunked-prefill` work as they do for the server, and what the server would refuse is refused
here in one line. Only flags that change which GEMMs a server runs, or its M list, are kept in
ServerFlags; every other flag still counts in the launch hash. Flags that older releases took
are refused with their successor.
"""

from __future__ import annotations

import hashlib
import json

import msgspec

from tasks.plan import sglang_table

# sglang's dest -> ServerFlags field, for every option a planning rule reads (the rest are only checked).
_READ = {
    "tp_size": "tp", "dp_size": "dp", "attn_dp_size": "attn_dp_size", "ep_size": "ep",
    "ep_num_redundant_experts": "ep_num_redundant_experts", "moe_a2a_backend": "moe_a2a_backend",
    "moe_runner_backend": "moe_runner_backend", "moe_dense_tp_size": "moe_dense_tp_size",
    "chunked_prefill_size": "chunked_prefill_size", "deepep_mode": "deepep_mode",
    "fp8_gemm_runner_backend": "fp8_gemm_backend", "speculative_algorithm": "speculative_algorithm",
    "speculative_num_steps": "speculative_num_steps", "speculative_eagle_topk": "speculative_eagle_topk",
    "speculative_num_draft_tokens": "speculative_num_draft_tokens",
    "dsa_paged_mqa_logits_backend": "dsa_paged_mqa_logits_backend",
    "cuda_graph_max_bs_decode": "cuda_graph_max_bs_decode", "cuda_graph_bs_decode": "cuda_graph_bs_decode",
    "disable_decode_cuda_graph": "disable_decode_cuda_graph",
    "disable_cuda_graph_padding": "disable_cuda_graph_padding", "max_running_requests": "max_running_requests",
    "pp_size": "pp_size", "disable_shared_experts_fusion": "disable_shared_experts_fusion",
    "enforce_shared_experts_fusion": "enforce_shared_experts_fusion",
    "enable_two_batch_overlap": "enable_two_batch_overlap",
    "enable_single_batch_overlap": "enable_single_batch_overlap",
    "enable_deterministic_inference": "enable_deterministic_inference",
}
# Read, then folded into the fields above (parse()).
_FOLDED = ("enable_dp_attention", "disable_cuda_graph", "cuda_graph_backend_decode", "cuda_graph_config")
# Integers a planning rule divides or counts by: sglang fails on these later, in its hooks.
_POSITIVE = ("tp_size", "dp_size", "attn_dp_size", "ep_size", "moe_dense_tp_size", "speculative_num_steps",
             "speculative_eagle_topk", "speculative_num_draft_tokens", "cuda_graph_max_bs_decode",
             "max_running_requests", "pp_size")
# Flags older sglang releases took, gone from 0.5.23's argument parser.
_REMOVED = {
    "--enable-deepep-moe": "--moe-a2a-backend deepep",
    "--enable-ep-moe": "--ep-size <tp>",
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
    disable_decode_cuda_graph: bool = False  # resolved: every spelling that turns decode graphs off
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
    """Parse `args` as sglang 0.5.23's server does and keep what planning reads; `tp` is the tuple's own tp.

    Unknown options, ambiguous prefixes, bad choices and bad values are refused in one line, as
    sglang refuses them; any option sglang takes is accepted even when no rule reads it.
    """
    tokens = [str(t) for t in args]
    for token in tokens:
        flag = token.split("=", 1)[0]
        if flag in _REMOVED:
            raise ArgsError(f"{flag} was removed from sglang; use {_REMOVED[flag]}")
    try:
        given = sglang_table.parse(tokens)
    except sglang_table.TableError as exc:
        raise ArgsError(_short(str(exc))) from None
    if "help" in given:
        raise ArgsError("--help is not a launch argument")
    if "config" in given:
        raise ArgsError(f"--config {given['config']}: jitwarm cannot read the server's config file; "
                        "put its options in args")
    for dest in _POSITIVE:
        if dest in given and given[dest] < 1:
            raise ArgsError(f"{sglang_table.flag_of(dest)} expects a positive integer, got {given[dest]}")
    if given.get("ep_num_redundant_experts", 0) < 0:
        raise ArgsError(f"--ep-num-redundant-experts expects a non-negative integer, got {given['ep_num_redundant_experts']}")

    values = {field: given[dest] for dest, field in _READ.items() if dest in given}
    if "cuda_graph_bs_decode" in values:
        values["cuda_graph_bs_decode"] = tuple(values["cuda_graph_bs_decode"])
    _fold_decode_graphs(given, values)
    if "tp" in values and values["tp"] != tp:
        raise ArgsError(f"--tp-size {values['tp']} in args contradicts tp = {tp}")
    values["tp"] = tp
    if given.get("enable_dp_attention") and values.get("attn_dp_size", 1) == 1:
        # parallel_hook.py:39-61: `--dp N --enable-dp-attention` is `--attn-dp-size N`.
        values["attn_dp_size"], values["dp"] = values.get("dp", 1), 1
    if values.get("moe_a2a_backend") in EP_SPANNING_A2A:
        values["ep"] = tp  # overrides.py:1610-1620: _a2a_ep_size
    flags = ServerFlags(**values)
    _check_divisibility(flags)
    return flags


def _fold_decode_graphs(given: dict, values: dict) -> None:
    """cuda_graph_hook.py:53-98: the decode graph settings, lowest precedence first."""
    off = bool(given.get("disable_cuda_graph") or given.get("disable_decode_cuda_graph"))
    if given.get("cuda_graph_backend_decode") is not None:
        off = given["cuda_graph_backend_decode"] == "disabled"
    decode = _graph_config(given.get("cuda_graph_config")).get("decode", {})
    if "backend" in decode:
        off = decode["backend"] == "disabled"
    if decode.get("max_bs") is not None:
        values["cuda_graph_max_bs_decode"] = _positive_int("--cuda-graph-config decode.max_bs", decode["max_bs"])
    if decode.get("bs") is not None:
        sizes = decode["bs"] if isinstance(decode["bs"], list) else [decode["bs"]]
        values["cuda_graph_bs_decode"] = tuple(_positive_int("--cuda-graph-config decode.bs", b) for b in sizes)
    values["disable_decode_cuda_graph"] = off


def _graph_config(raw: str | None) -> dict:
    """--cuda-graph-config as model_executor/cuda_graph_config.py:246-290 reads it: a JSON object of phases."""
    if raw is None:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArgsError(f"--cuda-graph-config must be JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise ArgsError(f"--cuda-graph-config must be a JSON object of phases, got {raw!r}")
    unknown = sorted(set(parsed) - {"decode", "prefill"})
    if unknown:
        raise ArgsError(f"--cuda-graph-config: unknown phase {unknown[0]!r}, expected decode or prefill")
    backend = parsed.get("decode", {}).get("backend")
    if backend is not None and backend not in ("full", "breakable", "disabled"):
        raise ArgsError(f"--cuda-graph-config decode.backend {backend!r}: expected full, breakable or disabled")
    return parsed


def _positive_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgsError(f"{what} expects a positive integer, got {json.dumps(value)}")
    return value


def _short(message: str) -> str:
    """argparse's ambiguity message lists every match (hundreds for `--e`): keep the first few."""
    head, sep, matches = message.partition(" could match ")
    names = matches.split(", ")
    if not sep or len(names) <= 6:
        return message
    return f"{head}{sep}{', '.join(names[:6])} and {len(names) - 6} more"


def _check_divisibility(flags: ServerFlags) -> None:
    if flags.tp % flags.attn_dp_size:
        raise ArgsError(f"--attn-dp-size {flags.attn_dp_size} does not divide tp {flags.tp}")
    if flags.tp % flags.ep:
        raise ArgsError(f"--ep {flags.ep} does not divide tp {flags.tp}")
    if flags.moe_dense_tp_size not in (None, 1, flags.tp):
        # arg_groups/validation_hook.py:207-211
        raise ArgsError(f"--moe-dense-tp-size {flags.moe_dense_tp_size}: sglang takes only 1 or tp ({flags.tp})")
