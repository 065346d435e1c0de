"""sglang's server argument table as data, and an argparse parser rebuilt from it.

The table (data/sglang_0_5_23_args.json) is sglang 0.5.23's own `ServerArgs.add_cli_args`
parser written out as rows by tools/sglang_args_table.py: every option string, its nargs,
choices, value type and default. Rebuilding an `ArgumentParser` from those rows gives jitwarm
sglang's exact behaviour on unique prefixes (`--tp`, `--chunked-prefill`), ambiguous prefixes,
unknown options and bad choices, without importing sglang (which pulls torch).
"""

from __future__ import annotations

import argparse
import json
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

SGLANG_VERSION = "0.5.23"
TABLE_PATH = Path(__file__).with_name("data") / "sglang_0_5_23_args.json"

# Action classes as the table names them; sglang's custom ones reduce to the argparse behaviour they share.
_FLAG_KINDS = {"store_true", "store_false", "bool_optional", "deprecated_store_true"}


class TableError(ValueError):
    """An argument sglang's parser would refuse; the message is one line."""


def dump(parser: argparse.ArgumentParser) -> list[dict]:
    """The rows of `parser`: what parsing depends on, and defaults where they are plain data."""
    return [_row(action) for action in parser._actions]


def _row(action: argparse.Action) -> dict:
    kind = type(action).__name__
    kind = {"_StoreAction": "store", "_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
            "_StoreConstAction": "store_const", "_HelpAction": "help", "_AppendAction": "append",
            "_CountAction": "count", "BooleanOptionalAction": "bool_optional",
            "DeprecatedStoreTrueAction": "deprecated_store_true",
            "DeprecatedStoreConstAction": "deprecated_store_const", "LoRAPathAction": "lora_paths"}.get(kind, kind)
    value_type = action.type
    type_name = None if value_type is None else getattr(value_type, "__name__", type(value_type).__name__)
    return {
        "flags": list(action.option_strings),
        "dest": action.dest,
        "kind": kind,
        "nargs": action.nargs,
        "type": type_name,
        "choices": _choices(action.choices),
        "default": _plain(action.default),
    }


def _choices(choices):
    if choices is None:
        return None
    if isinstance(choices, (set, frozenset)):  # no order of its own: keep the table reproducible
        return sorted(_plain(c) for c in choices)
    return [_plain(c) for c in choices]


def _plain(value):
    """JSON-able data as is; anything else (functions, sentinels) by its repr-free type name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(TABLE_PATH.read_text())


class _Refusing(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message):
        raise TableError(message)

    def exit(self, status=0, message=None):
        raise TableError((message or "").strip() or f"exit {status}")


@lru_cache(maxsize=1)
def parser() -> argparse.ArgumentParser:
    """sglang's parser rebuilt from the table. Every default is SUPPRESS: the result holds only what was given."""
    built = _Refusing(prog="sglang serve", argument_default=argparse.SUPPRESS, allow_abbrev=True, add_help=False)
    for row in table()["options"]:
        kwargs: dict = {"dest": row["dest"], "default": argparse.SUPPRESS}
        kind = row["kind"]
        if kind in ("store_true", "deprecated_store_true", "help"):  # --help only matters for prefixes
            kwargs["action"] = "store_true"
        elif kind == "store_false":
            kwargs["action"] = "store_false"
        elif kind == "bool_optional":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:  # store, store_const with a value, lora_paths: values are taken as sglang takes them
            kwargs["nargs"] = row["nargs"]
            kwargs["type"] = _converter(row["type"])
            if row["choices"] is not None:
                kwargs["choices"] = row["choices"]
        flags = row["flags"]
        if kind == "bool_optional":
            flags = [f for f in flags if not f.startswith("--no-")]  # argparse adds the --no- form itself
        built.add_argument(*flags, **kwargs)
    return built


def _converter(type_name: str | None):
    if type_name == "int":
        return int
    if type_name == "float":
        return float
    if type_name == "human_readable_int":
        return human_readable_int
    return str  # json.loads, json_list_type, parse_cuda_graph_*: no planning rule reads their values


def human_readable_int(value: str) -> int:
    """utils/common.py:3394-3429: 16384, 16k (SI, decimals allowed) or 16Ki (IEC); suffixes case-sensitive."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)", value)
    if match:
        number, suffix = match.groups()
        iec = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
        if suffix in iec:
            if "." in number:
                raise argparse.ArgumentTypeError(f"decimals are not allowed with IEC suffixes like '{suffix}'")
            return int(number) * iec[suffix]
        return int(Decimal(number) * {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[suffix])
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: '{value}'") from None


def parse(tokens: list[str]) -> dict:
    """The options given in `tokens`, by dest, as sglang's parser reads them; TableError if it would refuse them."""
    try:
        namespace, extra = parser().parse_known_args(tokens)
    except argparse.ArgumentError as exc:
        raise TableError(str(exc)) from None
    if extra:
        raise TableError(f"unrecognized arguments: {' '.join(extra)}")
    return vars(namespace)


def flag_of(dest: str) -> str:
    """The first option string of `dest`, for messages."""
    return next((row["flags"][0] for row in table()["options"] if row["dest"] == dest and row["flags"]),
                "--" + dest.replace("_", "-"))


def default_of(dest: str):
    """sglang's declared default for `dest` (None where it is not plain data)."""
    return next((row["default"] for row in table()["options"] if row["dest"] == dest), None)


def differences(theirs: list[dict]) -> dict[str, list[str]]:
    """How `theirs` (another parser's rows) parses differently from the table, by kind of difference.

    Defaults and help are left out: neither changes how an argument list parses.
    """
    def keyed(rows):
        return {r["flags"][0]: (sorted(r["flags"]), r["kind"], r["nargs"], r["type"], r["choices"])
                for r in rows if r["flags"]}

    ours, other = keyed(table()["options"]), keyed(theirs)
    found = {
        "only in the installed sglang": sorted(other.keys() - ours.keys()),
        "only in jitwarm's table": sorted(ours.keys() - other.keys()),
        "parsed differently": sorted(flag for flag in ours.keys() & other.keys() if ours[flag] != other[flag]),
    }
    return {kind: flags for kind, flags in found.items() if flags}
