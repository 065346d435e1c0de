"""Known sources under a changed toolchain: a shape's entries (from its last warm, or a kernel
lock's variant) are named under the key parts they were taken with. Where only nvcc (its
version or path) or deep_gemm's install path changed, every kernel's source is the same and its
flags differ at most by the install path, so the name the new toolchain gives it can be computed
as deep_gemm computes it (tasks/state/kernel_keys.py): its recipe is compiled straight into
that entry, with no compile worker looking for it, and the shape's replay proves it (a replay
that compiles something sends the shape to discovery, as for any known source).

No name is trusted before the computation reproduces names deep_gemm gave: for 0.1.x, every
renamed entry's old name from its recipe and the old nvcc release; for 0.2.x, the name of an
entry DeepJIT built itself, from its kernel.cu and meta.json (which also give DeepJIT's config).
If that fails, nothing is renamed and the warm says why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.host import fingerprint
from tasks.state import entries, kernel_keys, recipes
from tasks.state.cacheroot import CacheRoot

# The key parts whose change leaves every kernel's source as it was (deep_gemm's release, the GPU
# and the flags' settings the same): the new names can be computed.
RENAMED_BY = frozenset({"nvcc", "nvcc.version_sha256", "deep_gemm.path", "env.DG_JIT_NVCC_COMPILER",
                        "env.DJ_JIT_NVCC_COMPILER"})
FAMILY_SUFFIX = (12, 9)  # deep_gemm passes an arch family suffix (sm_100f) only from this nvcc on


def renamable(old: dict, new: dict) -> bool:
    """Whether entries keyed under `old` key parts can be renamed for `new` ones."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if not changed or not changed <= RENAMED_BY:
        return False
    return _from_family_release(old.get("nvcc")) == _from_family_release(new.get("nvcc"))


def _from_family_release(version: str | None) -> bool | None:
    try:
        return tuple(int(x) for x in (version or "").split(".")[:2]) >= FAMILY_SUFFIX
    except ValueError:
        return None


class Renamer:
    """Computes the entries known recipes build under this host's toolchain. `refused` counts the
    shapes not renamed, `notes` says why (each reason once)."""

    def __init__(self, cache: CacheRoot, fp: dict, recipe_dir: Path, environ=None):
        self.cache, self.layout, self.recipe_dir, self.environ = cache, cache.layout, recipe_dir, environ
        self.parts, self.install = fingerprint.key_parts(fp), fp.get("deep_gemm.path")
        self.notes: list[str] = []
        self.renamed = self.refused = 0  # shapes
        self.changes: set[str] = set()  # what changed since the renamed shapes' warms, as fingerprint.diff says it
        self._text: str | None = None
        self._config: dict | None = None  # 0.2.x: DeepJIT's, from an entry it built here
        self._toolchains: dict[str, kernel_keys.Toolchain] = {}  # one per config: each header hashed once
        self._asked = False

    def near(self, parts: dict) -> bool:
        return renamable(parts, self.parts)

    def now(self, config: dict | None = None) -> kernel_keys.Toolchain | None:
        """This host's toolchain as deep_gemm keys kernels (asked once, when a shape needs it); for
        0.2.x, DeepJIT's config from an entry here, else `config` (a lock's)."""
        if not self._asked:
            self._asked = True
            self._text = fingerprint.nvcc_version_text(self.layout, self.environ)
            if not self._text:
                self._note("`nvcc --version` gave no answer here")
            elif not self.layout.keys_install_path:
                self._config, mismatch = deepjit_config(self.cache)
                if mismatch:  # the computation does not match this release: trust no name
                    self._text = None
                    self._note(mismatch)
        if not self._text:
            return None
        if not self.layout.keys_install_path:
            config = self._config or config
            if config is None:
                self._note(NO_CONFIG)
                return None
        key = json.dumps(config, sort_keys=True) if not self.layout.keys_install_path else ""
        if key not in self._toolchains:
            self._toolchains[key] = kernel_keys.Toolchain(self._text, config if key else None)
        return self._toolchains[key]

    def rename(self, old_parts: dict, kernels: dict[str, tuple[recipes.Recipe, list[str]]],
               config: dict | None = None) -> dict[str, recipes.Recipe] | None:
        """{new entry name: the recipe that builds it} for kernels given as {old name: (recipe,
        its argv as the old toolchain ran it)}, or None (a note says why). `config`: DeepJIT's,
        as a lock recorded it, where no entry here gives it."""
        if (now := self.now(config)) is None:
            self.refused += 1
            return None
        then = kernel_keys.Toolchain(f"release {'.'.join(str(old_parts.get('nvcc')).split('.')[:2])}", now.deepjit)
        old_install, renamed = old_parts.get("deep_gemm.path"), {}
        for old_name, (recipe, argv_then) in kernels.items():
            family = self.layout.family(old_name)
            argv = [a.replace(old_install, self.install) for a in argv_then] \
                if old_install and self.install and old_install != self.install else argv_then
            try:
                source = (recipe.path / "kernel.cu").read_text()
                # 0.1.x: the old nvcc's release is all its key took of it, so the old name is checked too.
                if self.layout.keys_install_path and (
                        again := self.layout.entry_name(family, source, argv_then, then)) != old_name:
                    return self._refuse(f"deep_gemm's key computed here gives {again} for {old_name}")
                new_name = self.layout.entry_name(family, source, argv, now)
                if argv != recipes.read_argv(recipe.path):
                    recipe = recipes.derive(self.recipe_dir, recipe, argv)
            except (OSError, kernel_keys.KeyUnknown) as exc:
                return self._refuse(f"{old_name}: {exc}")
            renamed[new_name] = recipe
        self.renamed += 1
        self.changes.update(fingerprint.diff(old_parts, self.parts))
        return renamed

    def _refuse(self, line: str) -> None:
        self.refused += 1
        self._note(line)

    def _note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)


NO_CONFIG = "no entry DeepJIT built itself is here, nor a kernel lock's record of its config"


def deepjit_config(cache: CacheRoot) -> tuple[dict | None, str | None]:
    """(DeepJIT's config (extra signature, include prefixes), None) from an entry it built itself,
    once that entry's own name is computed back from its files (one 128-bit match is proof
    enough); (None, why) if the computation gives another name; (None, None) if no such entry."""
    for root in cache.roots:
        try:
            names = sorted(e.name for e in os.scandir(entries.cache_dir(root)) if cache.layout.is_entry(e.name))
        except OSError:
            continue
        for name in names:
            entry = entries.cache_dir(root) / name
            try:
                meta = json.loads((entry / "meta.json").read_text())
                config, version, command = meta["config"], meta["compiler_info"]["version"], meta["command"]
                if (meta.get("compiler_options") or {}).get("post_hook"):
                    continue  # a post hook's script enters the key too: not computed here
                source = (entry / "kernel.cu").read_text()
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not built by DeepJIT (jitwarm's own entries record no config), or unreadable
            words = command.split(" ")  # DeepJIT joins its argv with spaces, unquoted
            argv = [recipes.SRC, *words[2:4], recipes.OUT, *words[5:]]
            try:
                computed = kernel_keys.deepjit_entry(cache.layout.family(name), source, argv,
                                                     kernel_keys.Toolchain(version, config))
            except kernel_keys.KeyUnknown as exc:
                return None, f"{entry}: {exc}"
            if computed != name:
                return None, f"DeepJIT's key computed here gives {computed} for {entry}"
            return config, None
    return None, None
