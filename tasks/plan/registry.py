"""models/*.toml: one file per served model, strictly validated.

Every problem becomes one line: `<file>: <field>: <what was expected>, got <value>`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from tasks.plan import launch_args

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
# What no sglang server could run, refused in one line rather than planned: an M (tokens in one
# forward) above 2^20, more than 2^17 M values, a model file above 1 MiB (a real one is a few KiB).
MAX_M, MAX_M_VALUES, MAX_FILE_BYTES = 1 << 20, 1 << 17, 1 << 20
MValue = Annotated[int, msgspec.Meta(gt=0, le=MAX_M)]
# Launch-tuple env vars the planner reads: the environment the server will run with.
PLAN_ENV_KEYS = (
    "SGLANG_JIT_DEEPGEMM_FAST_WARMUP",
    "SGLANG_USE_DEEPGEMM_BMM",
    "SGLANG_ENABLE_JIT_DEEPGEMM",
    "SGLANG_SHARED_EXPERT_TP1",
    "SGLANG_DISABLE_DSA_INDEXER_FUSION",
    "SGLANG_OPT_BF16_FP32_GEMM_ALGO",
    "SGLANG_FP8_PAGED_MQA_LOGITS_TORCH",
    "SGLANG_DEEPGEMM_STANDARD_LAYOUT",
)
# Plan env keys that take a word, not a boolean (environ.py:1884 SGLANG_OPT_BF16_FP32_GEMM_ALGO).
_STRING_ENV = {"SGLANG_OPT_BF16_FP32_GEMM_ALGO": ("cublas", "hpc", "deep_gemm"),
               "SGLANG_DEEPGEMM_STANDARD_LAYOUT": ("auto", "masked", "compact")}  # environ.py:1352
_TRUE = {"1", "true", "yes", "y", "on"}


def env_choice(env: dict, key: str, default: str) -> str:
    """A word-valued plan env key, lowercased as sglang reads it; ValueError names a bad one."""
    value = env.get(key, default).lower()
    if value not in _STRING_ENV[key]:
        raise ValueError(f"{key}={env[key]!r}: expected one of {', '.join(_STRING_ENV[key])}")
    return value
_FALSE = {"0", "false", "no", "n", "off", ""}


class _Launch(msgspec.Struct, forbid_unknown_fields=True):
    tp: PositiveInt
    args: list[str] = []
    tags: list[str] = []
    m_list: Literal["default", "fast"] | Annotated[list[MValue], msgspec.Meta(max_length=MAX_M_VALUES)] | None = None
    env: dict[str, str] = {}
    path: Literal["auto", "fallback"] = "auto"
    fallback_timeout_s: PositiveInt = 1800


class _ModelFile(msgspec.Struct, forbid_unknown_fields=True):
    hf_id: str
    launch: Annotated[list[_Launch], msgspec.Meta(min_length=1)]
    config: dict[str, Any] | None = None
    config_source: Literal["embedded", "hf-cache"] = "embedded"
    revision: str | None = None


class LaunchSpec(msgspec.Struct, frozen=True):
    index: int
    tp: int
    args: tuple[str, ...]
    tags: tuple[str, ...]
    m_list: str | tuple[int, ...] | None
    env: dict[str, str]
    flags: launch_args.ServerFlags
    hash: str
    path: str = "auto"
    fallback_timeout_s: int = 1800


class ModelSpec(msgspec.Struct, frozen=True):
    name: str
    path: Path
    hf_id: str
    config: dict | None
    config_source: str
    revision: str | None
    launches: tuple[LaunchSpec, ...]


class RegistryError(msgspec.Struct, frozen=True):
    """A model file that could not be loaded; it still becomes a (failing) target."""

    name: str
    path: Path
    message: str


def env_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected a boolean (1/0/true/false), got {json.dumps(value)}")


def model_files(models_dir: Path) -> list[Path]:
    """Every *.toml in models_dir (locks and hidden files excluded), sorted by name."""
    return sorted(p for p in Path(models_dir).glob("*.toml")
                  if not p.name.startswith(".") and not p.name.endswith(".lock.toml"))


def problem(models_dir: Path) -> str | None:
    """Why `models_dir` cannot be the registry, or None. A misspelt or empty models dir
    must not pass for "0 of 0 targets stale": that turns a CI gate green."""
    where = f"registry {display_path(Path(models_dir))} (JITWARM_MODELS_DIR or [tool.jitwarm] models_dir)"
    if not Path(models_dir).exists():
        return f"{where} does not exist"
    if not Path(models_dir).is_dir():
        return f"{where} is not a directory"
    if not model_files(models_dir):
        return f"{where} holds no model files (*.toml)"
    return None


def load(models_dir: Path) -> list[ModelSpec | RegistryError]:
    return [load_file(p) for p in model_files(models_dir)]


def load_file(path: Path, data: bytes | None = None) -> ModelSpec | RegistryError:
    """One model file, from `data` when the caller already read its bytes."""
    name = path.stem
    try:
        return _parse(path, name, data)
    except _Invalid as exc:
        return RegistryError(name, path, f"{display_path(path)}: {exc}")


class _Invalid(ValueError):
    """One line describing what is wrong with a model file (without the file name)."""


def _parse(path: Path, name: str, data: bytes | None) -> ModelSpec:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise _Invalid(f"file name: expected letters, digits, '.', '_' or '-', got {json.dumps(name)}")
    try:
        if data is None and path.stat().st_size > MAX_FILE_BYTES:
            raise _Invalid(f"file is {path.stat().st_size} bytes; a model file is at most {MAX_FILE_BYTES}")
        if data is not None and len(data) > MAX_FILE_BYTES:
            raise _Invalid(f"file is {len(data)} bytes; a model file is at most {MAX_FILE_BYTES}")
        raw = tomllib.loads((path.read_bytes() if data is None else data).decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _Invalid(f"invalid TOML: {exc}") from None
    try:
        parsed = msgspec.convert(raw, _ModelFile, strict=True)
    except msgspec.ValidationError as exc:
        raise _Invalid(_explain(str(exc), raw)) from None

    if not re.fullmatch(r"[^/\s]+/[^/\s]+", parsed.hf_id):
        raise _Invalid(f"hf_id: expected \"org/name\", got {json.dumps(parsed.hf_id)}")
    if parsed.config_source == "embedded" and parsed.config is None:
        raise _Invalid("config: required when config_source is \"embedded\" (or set config_source = \"hf-cache\")")
    if parsed.config_source == "hf-cache" and parsed.config is not None:
        raise _Invalid("config: not allowed with config_source = \"hf-cache\"; keep one source")

    if parsed.config is not None and "index_topk" in parsed.config and "indexer_rope_interleave" not in parsed.config:
        # Decides whether indexer.wk runs on DeepGEMM (tasks/plan/deepseek.py); a checkpoint's
        # config.json may omit it (sglang reads false), an embedded config must say it.
        raise _Invalid("config.indexer_rope_interleave: required with index_topk (true or false, as the "
                       "checkpoint's config.json has it; absent there means false)")
    launches = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(parsed.launch):
        spec = _launch(i, entry)
        if spec.hash in seen:
            raise _Invalid(f"launch[{i}]: duplicates launch[{seen[spec.hash]}]")
        seen[spec.hash] = i
        launches.append(spec)
    return ModelSpec(name, path, parsed.hf_id, parsed.config, parsed.config_source,
                     parsed.revision, tuple(launches))


def _launch(i: int, entry: _Launch) -> LaunchSpec:
    for key, value in entry.env.items():
        if key not in PLAN_ENV_KEYS:
            raise _Invalid(f"launch[{i}].env.{key}: unknown key; known: {', '.join(PLAN_ENV_KEYS)}")
        if key in _STRING_ENV:
            if value not in _STRING_ENV[key]:
                raise _Invalid(f"launch[{i}].env.{key}: expected one of {', '.join(_STRING_ENV[key])}, "
                               f"got {json.dumps(value)}")
            continue
        try:
            env_bool(value)
        except ValueError as exc:
            raise _Invalid(f"launch[{i}].env.{key}: {exc}") from None
    for j, arg in enumerate(entry.args):
        if "\n" in arg or "\x00" in arg:
            raise _Invalid(f"launch[{i}].args[{j}]: control characters are not allowed, got {json.dumps(arg)}")
    try:
        flags = launch_args.parse(entry.args, entry.tp)
    except launch_args.ArgsError as exc:
        raise _Invalid(f"launch[{i}].args: {exc}") from None
    m_list = tuple(entry.m_list) if isinstance(entry.m_list, list) else entry.m_list
    if isinstance(m_list, tuple) and not m_list:
        raise _Invalid(f"launch[{i}].m_list: expected \"default\", \"fast\" or a non-empty list, got []")
    digest = launch_args.launch_hash(entry.tp, entry.args, entry.env, m_list)
    return LaunchSpec(i, entry.tp, tuple(entry.args), tuple(entry.tags), m_list,
                      dict(entry.env), flags, digest, entry.path, entry.fallback_timeout_s)


_AT = r"(?: - at `\$(?P<path>[^`]*)`)?$"
_EXPECTED = r"Expected `(?P<want>[^`]+)`(?P<bound>[^,]*?)(?:, got `(?P<got>[^`]+)`)?" + _AT
_UNKNOWN = r"Object contains unknown field `(?P<key>[^`]+)`" + _AT
_MISSING = r"Object missing required field `(?P<key>[^`]+)`" + _AT
_ENUM = r"Invalid enum value (?P<value>.+?)" + _AT
# What each field expects, in words; msgspec's own type names are the fallback. Patterns
# are plain strings, compiled (and cached by `re`) only when a file is actually invalid.
_FIELD_WORDS = [
    (r"launch\[\d+\]\.tp$", "a positive integer"),
    (r"launch\[\d+\]\.m_list(\[\d+\])?$", f"\"default\", \"fast\" or a list of at most {MAX_M_VALUES} "
     f"integers from 1 to {MAX_M}"),
    (r"launch$", "a non-empty list of [[launch]] tables"),
    (r"launch\[\d+\]\.(args|tags)(\[\d+\])?$", "a list of strings"),
    (r"launch\[\d+\]\.env(\..+)?$", "a table of strings"),
    (r"config_source$", "\"embedded\" or \"hf-cache\""),
    (r"launch\[\d+\]\.path$", "\"auto\" or \"fallback\""),
    (r"launch\[\d+\]\.fallback_timeout_s$", "a positive number of seconds"),
    (r"config$", "a table"),
]
_TYPE_WORDS = {"int": "an integer", "str": "a string", "array": "a list", "object": "a table"}


def _explain(message: str, raw: dict) -> str:
    """Turn msgspec's message into `field: expected X, got <value>`."""
    if m := re.match(_UNKNOWN, message):
        return f"{_field(m['path'], m['key'])}: unknown key"
    if m := re.match(_MISSING, message):
        return f"{_field(m['path'], m['key'])}: required key missing"
    m = re.match(_EXPECTED, message) or re.match(_ENUM, message)
    if m:
        field = _field(m["path"])
        want = next((words for pattern, words in _FIELD_WORDS if re.search(pattern, field)), None)
        if want is None:
            want = _TYPE_WORDS.get(m.groupdict().get("want") or "", "a valid value")
        return f"{field}: expected {want}, got {_value_at(raw, m['path'])}"
    return message


def _field(path: str | None, key: str | None = None) -> str:
    path = (path or "").lstrip(".")
    if key:
        path = f"{path}.{key}" if path else key
    return path or "(top level)"


def _value_at(raw: Any, path: str | None) -> str:
    value = raw
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path or ""):
        key, index = part
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            return "?"
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_resolved(os.getcwd())))
    except (ValueError, OSError):
        return str(path)


@functools.lru_cache(maxsize=4)
def _resolved(cwd: str) -> Path:
    return Path(cwd).resolve()
