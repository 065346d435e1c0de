"""Known sources: shapes whose lost entries are rebuilt from recipes, without deep_gemm finding them.

A shape qualifies when its last warm's record holds (it succeeded, under the cache key parts
fingerprint.key_parts names, so its entries' names still hold) and every entry the loader no
longer finds has a recipe that produced its binary (tasks/state/recipes.py, by digest). Its
recipes go to the kernel queue; as each compile lands, the entries built from it are written
(entries.assemble) and, once a shape has all of them, its ready file appears and its replay
in the shared replay processes (tasks/runner/shared.py) proves it. No compile worker calls
deep_gemm for such a shape. A replay that still compiles something shows the recipes were
not the whole story: batch.py then warms that shape by discovery.
"""

from __future__ import annotations

import contextlib
import heapq
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

from tasks.host import fingerprint, packages
from tasks.plan.targets import ShapeWork
from tasks.runner import rename
from tasks.state import entries, kernel_lock, recipes, records
from tasks.state.cacheroot import CacheRoot


@dataclass
class KnownShape:
    names: list[str]  # every entry its last warm used
    missing: dict[str, recipes.Recipe]  # the entries to build -> the recipe of each one's binary


def plan(cache: CacheRoot, works: list[ShapeWork], fp: dict, recipe_dir: Path,
         locks: list[tuple[kernel_lock.KernelLock, kernel_lock.Variant]] = (),
         renamer: rename.Renamer | None = None) -> dict[str, KnownShape]:
    """The works whose lost entries known recipes rebuild (key -> what to build): from the
    shape's last warm here, else from a kernel lock's variant taken under the same key parts;
    with `renamer`, also those taken under a toolchain it can rename their entries for."""
    parts = fingerprint.key_parts(fp)
    wanted: dict[str, tuple[list[str], dict[str, str]]] = {}
    moved: dict[str, tuple[dict, dict[str, str]]] = {}  # key -> (old key parts, {old name: digest})
    for work in works:
        record, _ = records.read_shape(cache.path, work.key)
        if record is None or not (record.ok or record.baked) or not record.entries:
            continue
        then = fingerprint.key_parts(record.fingerprint)
        if then == parts:
            lost = {name: e.sha256 for name, e in record.entries.items() if entries.locate(cache, name) is None}
            if all(lost.values()):
                wanted[work.key] = (sorted(record.entries), lost)
        elif renamer is not None and renamer.near(then) and all(e.sha256 for e in record.entries.values()):
            moved[work.key] = (then, {name: e.sha256 for name, e in record.entries.items()})
    found = recipes.by_digest(recipe_dir, {d for _, named in [*wanted.values(), *moved.values()] for d in named.values()})
    known = {key: KnownShape(names, {name: found[d] for name, d in lost.items()})
             for key, (names, lost) in wanted.items() if all(d in found for d in lost.values())}
    for key, (then, named) in moved.items():
        if all(d in found for d in named.values()):
            given = {name: (found[d], recipes.read_argv(found[d].path)) for name, d in named.items()}
            known.update(_renamed(cache, key, renamer.rename(then, given)))
    install = _install(fp)
    for work in works:
        lock, variant = next(((lock, v) for lock, v in locks if work.key in v.shapes), (None, None))
        if work.key in known or lock is None:
            continue
        named = variant.shapes[work.key]
        if variant.key_parts != parts:
            if renamer is not None:
                old_install = variant.key_parts.get("deep_gemm.path") or install
                given = {name: (kernel_lock.materialize(lock, key, recipe_dir, install),
                                kernel_lock.argv(lock, key, old_install)) for name, key in named.items()}
                known.update(_renamed(cache, work.key, renamer.rename(variant.key_parts, given, variant.deepjit)))
            continue
        known[work.key] = KnownShape(sorted(named), {
            name: kernel_lock.materialize(lock, key, recipe_dir, install)
            for name, key in named.items() if entries.locate(cache, name) is None})
    return known


def _renamed(cache: CacheRoot, key: str, built: dict[str, recipes.Recipe] | None) -> dict[str, KnownShape]:
    if built is None:
        return {}
    return {key: KnownShape(sorted(built), {name: r for name, r in built.items() if entries.locate(cache, name) is None})}


def _install(fp: dict) -> str | None:
    """deep_gemm's install directory here: a lock's recipes name its headers from it."""
    where = packages.package_dir(fp["deep_gemm.module"])
    return str(where) if where else None


def recipes_of(known: dict[str, KnownShape]) -> list[recipes.Recipe]:
    """Every recipe the shapes need, once each, longest first."""
    return sorted({r for shape in known.values() for r in shape.missing.values()}, key=lambda r: (-r.seconds, r.key))


def ready_order(known: dict[str, KnownShape], slots: int) -> dict[str, float]:
    """When each shape should have its entries, if the queue compiles the recipes longest first
    on `slots` cores: its replay is scheduled by that, so replays follow the compiles."""
    free = [0.0] * max(1, slots)
    done: dict[str, float] = {}
    for recipe in recipes_of(known):
        start = heapq.heappop(free)
        done[recipe.key] = start + recipe.seconds
        heapq.heappush(free, done[recipe.key])
    return {key: max((done[r.key] for r in shape.missing.values()), default=0.0) for key, shape in known.items()}


class Lander:
    """Writes the entries of each compiled recipe, and each shape's ready file once all of its
    entries are in. `done` is the kernel queue's callback (any of its threads)."""

    def __init__(self, cache: CacheRoot, store: Path, nvcc: str, known: dict[str, KnownShape],
                 ready: dict[str, Path]):
        self.cache, self.store, self.nvcc, self.ready = cache, store, nvcc, ready
        self.lock = threading.Lock()
        self.waiting = {key: {r.key for r in shape.missing.values()} for key, shape in known.items()}
        self.builds: dict[str, list[str]] = {}  # recipe key -> entry names it gives
        self.recipe: dict[str, recipes.Recipe] = {}
        for shape in known.values():
            for name, recipe in shape.missing.items():
                self.builds.setdefault(recipe.key, []).append(name)
                self.recipe[recipe.key] = recipe
        self.written = 0
        self.failed: dict[str, str] = {}  # recipe key -> why its entries were not written

    def start(self) -> None:
        """Shapes that lost nothing are ready at once (their record was stale for another reason)."""
        for key, left in self.waiting.items():
            if not left:
                self._ready(key)

    def done(self, recipe_key: str, stored: bool) -> None:
        if recipe_key not in self.builds:
            return  # a kernel a compile worker found
        if stored:
            self._write(recipe_key)
        else:
            self.failed.setdefault(recipe_key, "its compile failed")
        with self.lock:
            for key, left in self.waiting.items():
                if recipe_key in left:
                    left.discard(recipe_key)
                    if not left:
                        self._ready(key)

    def _write(self, recipe_key: str) -> None:
        recipe = self.recipe[recipe_key]
        source, cubin = recipe.path / "kernel.cu", self.store / f"{recipe_key}.cubin"
        for name in sorted(set(self.builds[recipe_key])):
            entry = entries.cache_dir(self.cache.path) / name
            command = shlex.join([self.nvcc, *recipes.fill(recipes.read_argv(recipe.path), entry / "kernel.cu",
                                                            entry / "kernel.cubin")])
            try:
                if entries.assemble(self.cache, name, source, cubin, command):
                    with self.lock:
                        self.written += 1
            except OSError as exc:  # its replay compiles it; the shape is then warmed by discovery
                self.failed.setdefault(recipe_key, f"{name}: {exc}")

    def _ready(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.ready[key].write_bytes(b"")
