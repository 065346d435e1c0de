"""Kernel locks: a model's kernel sources, committed beside its spec (`<model>.kernels.json`).

`doit lock` writes one from the shapes a warm proved and the recipes their entries were
built from (tasks/state/recipes.py). A lock holds one variant per set of cache key parts
(fingerprint.key_parts: deep_gemm's release, nvcc, the GPU's arch and SMs, ...), so one file
serves a fleet of GPU kinds: per variant and shape, each entry's name and the recipe of its
binary; per recipe, the kernel source and nvcc argv, with deep_gemm's install directory as
@DEEP_GEMM@ so another install of the same release finds its headers. A warm on a fresh
runner (no records, no recipes) whose deep_gemm keys kernels as a variant says builds those
entries from it straight away (tasks/runner/known.py), and a host with nvcc and no GPU
bakes them (tasks/runner/bake.py).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tasks.state import recipes, records

SCHEMA = 1
SUFFIX = ".kernels.json"
INSTALL = "@DEEP_GEMM@"


class LockedRecipe(msgspec.Struct, kw_only=True):
    source: str  # kernel.cu
    argv: list[str]  # nvcc's arguments, the build paths as @SRC@ and @OUT@, the install as @DEEP_GEMM@
    seconds: float = 0.0  # its last compile's wall time: the longest go first


class Variant(msgspec.Struct, kw_only=True):
    key_parts: dict  # fingerprint.key_parts of the warm it was taken from: the entries' names hold only there
    shapes: dict[str, dict[str, str]]  # shape key -> {entry name: recipe key}
    written_at: str = ""
    # 0.2.x: DeepJIT's config as an entry it built recorded it (extra signature, include prefixes): with it a
    # runner with another nvcc can compute these entries' names there (tasks/runner/rename.py).
    deepjit: dict | None = None


class KernelLock(msgspec.Struct, kw_only=True):
    schema: int
    variants: list[Variant]
    recipes: dict[str, LockedRecipe]  # shared by the variants
    model: str = ""

    def variant(self, parts: dict) -> Variant | None:
        return next((v for v in self.variants if v.key_parts == parts), None)


class LockError(ValueError):
    """A lock file jitwarm cannot use; the message is one line naming the file and field."""


def path_for(models_dir: Path, model: str) -> Path:
    return Path(models_dir) / f"{model}{SUFFIX}"


def matching(models_dir: Path, parts: dict, near=None) -> tuple[list[tuple[KernelLock, Variant]], list[str]]:
    """(lock, its variant) for each lock in `models_dir` with a variant taken where deep_gemm keys
    kernels as `parts` says (else, with `near`, one whose key parts `near` accepts: its entries can
    be renamed), and a line for each lock file that cannot be read or has none."""
    found, problems = [], []
    for path in sorted(Path(models_dir).glob(f"*{SUFFIX}")):
        try:
            lock = read(path)
        except LockError as exc:
            problems.append(str(exc))
            continue
        if (variant := lock.variant(parts)) is not None:
            found.append((lock, variant))
        elif near and (variant := next((v for v in lock.variants if near(v.key_parts)), None)):
            found.append((lock, variant))
        elif lock.variants:
            nearest = min(lock.variants, key=lambda v: len(changed(v.key_parts, parts).split(", ")))
            problems.append(f"{path}: no variant taken where deep_gemm keys kernels as here (nearest: "
                            f"{changed(nearest.key_parts, parts)})")
    return found, problems


def changed(old: dict, new: dict) -> str:
    """What differs between two sets of key parts, in a few words."""
    return ", ".join(f"{k} {old.get(k)!r} here {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))


def read(path: Path) -> KernelLock:
    try:
        data = msgspec.json.decode(Path(path).read_bytes())
    except OSError as exc:
        raise LockError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except msgspec.DecodeError as exc:
        raise LockError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LockError(f"{path}: expected an object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise LockError(f"{path}: schema: expected {SCHEMA}, got {data.get('schema')!r}")
    # Field by field where msgspec would say only `$.variants[0].shapes[...]`: the message names the key.
    variants = data.get("variants")
    if not isinstance(variants, list):
        raise LockError(f"{path}: variants: expected a list, got {type(variants).__name__}")
    for i, variant in enumerate(variants):
        where = f"variants[{i}]"
        if not isinstance(variant, dict):
            raise LockError(f"{path}: {where}: expected an object, got {type(variant).__name__}")
        for shape, named in _items(variant, "shapes", path, where):
            if not isinstance(named, dict):
                raise LockError(f"{path}: {where}.shapes.{shape}: expected an object of entry name -> recipe key")
            for name, key in named.items():
                if not isinstance(key, str):
                    raise LockError(f"{path}: {where}.shapes.{shape}.{name}: expected a recipe key (text), got {key!r}")
                if key not in (data.get("recipes") or {}):
                    raise LockError(f"{path}: {where}.shapes.{shape}.{name}: recipe {key!r} is not in recipes")
    for key, recipe in _items(data, "recipes", path):
        try:
            msgspec.convert(recipe, LockedRecipe)
        except msgspec.ValidationError as exc:
            raise LockError(f"{path}: recipes.{key}: {exc}") from None
    try:
        return msgspec.convert(data, KernelLock)
    except msgspec.ValidationError as exc:
        raise LockError(f"{path}: {exc}") from None


def _items(data: dict, field: str, path: Path, within: str = ""):
    value = data.get(field)
    if not isinstance(value, dict):
        where = f"{within}.{field}" if within else field
        raise LockError(f"{path}: {where}: expected an object, got {type(value).__name__}")
    return value.items()


def write(path: Path, lock: KernelLock) -> None:
    records.replace_file(path, msgspec.json.format(msgspec.json.encode(lock, order="sorted"), indent=1) + b"\n")


def locked_recipe(where: Path, install: str | None) -> LockedRecipe:
    argv = recipes.read_argv(where)
    if install:
        argv = [a.replace(install, INSTALL) for a in argv]
    return LockedRecipe(source=(where / "kernel.cu").read_text(), argv=argv,
                        seconds=recipes.expected_seconds(where.parent, where.name))


def argv(lock: KernelLock, key: str, install: str | None) -> list[str]:
    """The lock's recipe `key`'s nvcc argv, deep_gemm's install as `install`."""
    return [a.replace(INSTALL, install) for a in lock.recipes[key].argv] if install else lock.recipes[key].argv


def materialize(lock: KernelLock, key: str, recipe_dir: Path, install: str | None) -> recipes.Recipe:
    """The lock's recipe `key` as a recipe on disk (kept if one is there)."""
    locked = lock.recipes[key]
    return recipes.Recipe(key, recipes.write(recipe_dir, key, locked.source.encode(), argv(lock, key, install),
                                             locked.seconds),
                          locked.seconds)
