"""Server launch args: normalisation, hashing and the few flags that change DeepGEMM shapes.

Only flags that change which GEMMs a server runs, or its M list, are interpreted;
every other flag is carried along untouched (it still counts in the hash).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# flag -> (field, kind); aliases follow sglang's ServerArgs.
_VALUE_FLAGS = {
    "--tp": ("tp", int),
    "--tp-size": ("tp", int),
    "--tensor-parallel-size": ("tp", int),
    "--dp": ("dp", int),
    "--dp-size": ("dp", int),
    "--data-parallel-size": ("dp", int),
    "--ep": ("ep", int),
    "--ep-size": ("ep", int),
    "--expert-parallel-size": ("ep", int),
    "--moe-a2a-backend": ("moe_a2a_backend", str),
    "--moe-runner-backend": ("moe_runner_backend", str),
    "--moe-dense-tp-size": ("moe_dense_tp_size", int),
    "--chunked-prefill-size": ("chunked_prefill_size", int),
    "--deepep-mode": ("deepep_mode", str),
}
_BOOL_FLAGS = {
    "--enable-dp-attention": "enable_dp_attention",
    "--disable-shared-experts-fusion": "disable_shared_experts_fusion",
    # Older sglang spellings of the same switches.
    "--enable-deepep-moe": "enable_deepep_moe",
    "--enable-ep-moe": "enable_ep_moe",
}
_CHOICES = {
    "deepep_mode": ("auto", "normal", "low_latency"),
}


class ArgsError(ValueError):
    """A launch arg that cannot be interpreted; the message is one line."""


@dataclass(frozen=True)
class ServerFlags:
    tp: int
    dp: int = 1
    enable_dp_attention: bool = False
    ep: int = 1
    moe_a2a_backend: str = "none"
    moe_runner_backend: str = "auto"
    moe_dense_tp_size: int | None = None
    chunked_prefill_size: int | None = None
    deepep_mode: str = "auto"
    disable_shared_experts_fusion: bool = False

    @property
    def deepep(self) -> bool:
        return self.moe_a2a_backend == "deepep"

    @property
    def attn_tp(self) -> int:
        """Tensor-parallel width of attention: dp-attention splits tp into dp groups."""
        return self.tp // self.dp if self.enable_dp_attention else self.tp


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
        if token in _BOOL_FLAGS:
            values[_BOOL_FLAGS[token]] = True
        i += 1

    if "tp" in values and values["tp"] != tp:
        raise ArgsError(f"--tp {values['tp']} in args contradicts tp = {tp}")
    values["tp"] = tp
    if values.pop("enable_deepep_moe", False):
        values.setdefault("moe_a2a_backend", "deepep")
    if values.pop("enable_ep_moe", False):
        values.setdefault("ep", tp)
    if values.get("moe_a2a_backend") == "deepep":
        # sglang forces ep_size = tp_size under DeepEP.
        values["ep"] = tp
    flags = ServerFlags(**values)
    _check_divisibility(flags)
    return flags


def _convert(flag: str, raw: str, kind):
    if kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise ArgsError(f"{flag} expects an integer, got {json.dumps(raw)}") from None
        if value < 1 and flag != "--chunked-prefill-size":
            raise ArgsError(f"{flag} expects a positive integer, got {json.dumps(raw)}")
        return value
    return raw


def _check_divisibility(flags: ServerFlags) -> None:
    if flags.enable_dp_attention and flags.tp % flags.dp:
        raise ArgsError(f"--dp {flags.dp} does not divide tp {flags.tp}")
    if flags.tp % flags.ep:
        raise ArgsError(f"--ep {flags.ep} does not divide tp {flags.tp}")
    if flags.moe_dense_tp_size is not None and flags.tp % flags.moe_dense_tp_size:
        raise ArgsError(f"--moe-dense-tp-size {flags.moe_dense_tp_size} does not divide tp {flags.tp}")
