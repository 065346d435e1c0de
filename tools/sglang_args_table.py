"""Write sglang's server argument table (tasks/plan/data/sglang_0_5_23_args.json) from sglang's source.

Usage: python tools/sglang_args_table.py SGLANG_SRC [--out PATH] [--tarball PATH]

SGLANG_SRC is an unpacked sglang wheel (the folder holding `sglang/` and `sglang-*.dist-info/`).
sglang's `ServerArgs.add_cli_args` runs for real, but only its argument modules load: every other
sglang module is a stand-in, so neither torch nor the rest of sglang's dependencies are needed.
Constants imported from a stand-in module are read from that module's source. Each source file
that was loaded is recorded with its sha256 from the wheel's RECORD, and --tarball packs them for
tests/plan/test_sglang_table.py, which rebuilds the table from them offline.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import tarfile
import types
from pathlib import Path

# Modules that define the parser; everything else under sglang is a stand-in.
REAL = ("sglang.srt.arg_groups", "sglang.srt.server_args", "sglang.srt.parser.reasoning_parser_names",
        "sglang.srt.function_call.parser_names", "sglang.kernels.ops.kv_canary.consts",
        "sglang.srt.model_executor.cuda_graph_config")


def _stand_in_value(name: str, truthy: bool = True):
    """A permissive object named `name`: any attribute, call, iteration or subclassing works.

    Truthy, as the function or class it stands for is (`type_parser or int` must keep it); what a
    call returns is falsy, as an unset setting is (`envs.X.get()`).
    """
    return type(name, (), {
        "__name__": name,
        "__getattr__": lambda self, attr: _stand_in_value(attr),
        "__call__": lambda self, *a, **k: _stand_in_value(name, truthy=False),
        "__iter__": lambda self: iter(()),
        "__bool__": lambda self: truthy,
        "__mro_entries__": lambda self, bases: (object,),
    })()


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: Path):
        self.root = root
        self.stand_ins: set[str] = set()
        self.constant_sources: set[Path] = set()  # stand-in modules whose literals were read

    def find_spec(self, name, path, target=None):
        if name != "sglang" and not name.startswith("sglang."):
            return None
        base = self.root / name.replace(".", "/")
        real = any(name == r or name.startswith(r + ".") for r in REAL)
        if real and base.with_suffix(".py").is_file():
            return importlib.util.spec_from_file_location(name, base.with_suffix(".py"))
        if real and (base / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(name, base / "__init__.py",
                                                          submodule_search_locations=[str(base)])
        spec = importlib.machinery.ModuleSpec(name, self, is_package=True)
        if base.is_dir() and any(r.startswith(name + ".") for r in REAL):
            spec.submodule_search_locations = [str(base)]  # a package shell: its __init__ never runs
        else:
            self.stand_ins.add(name)
        return spec

    def create_module(self, spec):
        if spec.name in self.stand_ins:
            module = _StandInModule(spec.name, self)
        else:
            module = types.ModuleType(spec.name)
        module.__path__ = list(spec.submodule_search_locations or [])
        return module

    def exec_module(self, module):
        pass


class _StandInModule(types.ModuleType):
    def __init__(self, name, finder):
        super().__init__(name)
        self._finder = finder

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "_finder":
            raise AttributeError(attr)
        if attr.isupper():
            found = _constant(self._finder.root, self.__name__, attr)
            if found is not None:
                self._finder.constant_sources.add(found[1])
                return found[0]
        return _stand_in_value(attr)


def _constant(root: Path, module: str, name: str):
    """(value, path) of a module-level literal `NAME = ...` in the stand-in module's own source, or None."""
    base = root / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if not path.is_file():
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                try:
                    return ast.literal_eval(node.value), path
                except ValueError:
                    return None
    return None


def build(root: Path):
    """sglang's parser built by its own code under `root`; returns (parser, loaded source paths)."""
    sys.path_importer_cache.clear()
    saved = {k: v for k, v in sys.modules.items() if k == "sglang" or k.startswith("sglang.")}
    for k in saved:
        del sys.modules[k]
    finder = _Finder(root)
    sys.meta_path.insert(0, finder)
    try:
        server_args = importlib.import_module("sglang.srt.server_args")
        parser = argparse.ArgumentParser(prog="sglang serve")
        server_args.ServerArgs.add_cli_args(parser)
        files = {Path(m.__file__) for k, m in sys.modules.items()
                 if (k == "sglang" or k.startswith("sglang.")) and getattr(m, "__file__", None)}
        loaded = sorted(str(p.relative_to(root)) for p in files | finder.constant_sources)
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k == "sglang" or k.startswith("sglang.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return parser, loaded


def record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def table_from(root: Path, version: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.plan import sglang_table

    parser, loaded = build(root)
    return {
        "sglang": version,
        "made_by": "tools/sglang_args_table.py",
        "sources": {path: record_hash(root / path) for path in loaded},
        "options": sglang_table.dump(parser),
    }


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("src", type=Path)
    cli.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tasks/plan/data/sglang_0_5_23_args.json")
    cli.add_argument("--tarball", type=Path)
    args = cli.parse_args()
    dist_info = next(args.src.glob("sglang-*.dist-info"))
    version = dist_info.name.removeprefix("sglang-").removesuffix(".dist-info")
    record = dict(line.split(",")[:2] for line in (dist_info / "RECORD").read_text().splitlines() if line.count(",") >= 2)
    table = table_from(args.src, version)
    wrong = [p for p, h in table["sources"].items() if record.get(p) != h]
    if wrong:
        print(f"sources differ from the wheel's RECORD: {wrong}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    if args.tarball:
        with tarfile.open(args.tarball, "w:gz") as tar:
            for path in table["sources"]:
                tar.add(args.src / path, arcname=path, filter=_reproducible)
    print(f"{len(table['options'])} options from {len(table['sources'])} files of sglang {version} -> {args.out}")
    return 0


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


if __name__ == "__main__":
    sys.exit(main())
