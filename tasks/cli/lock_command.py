"""`doit lock [TARGET...]`: write each selected model's kernel lock beside its spec.

The lock (tasks/state/kernel_lock.py) names, for every shape of the model's selected targets
that is warm here, its entries and the kernel source and nvcc argv each one's binary came
from. Committed next to the model, it lets a fresh runner build those entries without
deep_gemm finding them, and a host with nvcc and no GPU bake them. Needs no GPU or torch.
"""

from __future__ import annotations

import sys
import time

from tasks.cli.commands import _TargetCommand
from tasks.host import fingerprint, packages
from tasks.plan.text import plural
from tasks.runner import rename
from tasks.state import kernel_lock, recipes, records


class Lock(_TargetCommand):
    name = "lock"
    doc_purpose = "write each selected model's kernel lock (<model>.kernels.json) beside its spec"
    doc_usage = "[TARGET ...]"
    doc_description = (
        "Records, for every warm shape of the selected targets (default: all), its cache entries and the kernel "
        "source and nvcc argv each came from, so a fresh runner or a GPU-less host builds them without deep_gemm "
        "finding them. One variant per toolchain and GPU kind: the others stay, and shapes of this one locked "
        "earlier are kept. Exit 1 if a selected shape could not be locked (not warm here, or warmed without the "
        "kernel queue's recipes).")
    cmd_options = ()

    def report(self, session, chosen, picked, all_targets) -> int:
        fp, cache = session.fingerprint, session.root
        parts = fingerprint.key_parts(fp)
        recipe_dir = recipes.directory(cache.path)
        install = packages.package_dir(fp["deep_gemm.module"])
        left_out = 0
        # 0.2.x: DeepJIT's config, read (and checked) once from an entry it built here.
        deepjit = None if cache.layout.keys_install_path else rename.deepjit_config(cache)[0]
        for model in sorted({t.model for t in picked}):
            works = {w.key: w for t in picked if t.model == model for w in t.works}
            path = kernel_lock.path_for(session.settings.models_dir, model)
            lock = _earlier(path, model)
            variant = lock.variant(parts)
            if variant is None:
                variant = kernel_lock.Variant(key_parts=parts, shapes={})
                lock.variants.append(variant)
            missing = []
            for work in works.values():
                named = _named(cache, work, fp, recipe_dir)
                if named is None:
                    missing.append(work.name)
                    continue
                variant.shapes[work.key] = {name: recipe.key for name, recipe in named.items()}
                for recipe in named.values():
                    lock.recipes[recipe.key] = kernel_lock.locked_recipe(recipe.path, str(install) if install else None)
            lock.variants = [v for v in lock.variants if v.shapes]
            used = {key for v in lock.variants for named in v.shapes.values() for key in named.values()}
            lock.recipes = {key: r for key, r in lock.recipes.items() if key in used}
            variant.written_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            variant.deepjit = deepjit or variant.deepjit
            if lock.variants:
                kernel_lock.write(path, lock)
            others = f" (and {plural(len(lock.variants) - 1, 'variant')} for other GPUs or toolchains)" \
                if len(lock.variants) > 1 else ""
            print(f"{path}: {plural(len(variant.shapes), 'shape')}, {plural(len(lock.recipes), 'kernel source')}{others}"
                  + (f"; not locked, not warm here with recipes: {', '.join(sorted(missing))}" if missing else ""))
            left_out += len(missing)
        if left_out:
            print(f"jitwarm: {plural(left_out, 'shape')} not locked: warm them (with JITWARM_KERNEL_QUEUE on, "
                  f"which keeps recipes) in {cache}, then lock again", file=sys.stderr)
        return 1 if left_out else 0


def _earlier(path, model: str) -> kernel_lock.KernelLock:
    """The model's lock to add to: the one there, else a new one. Variants taken under other
    key parts (other GPUs, toolchains) stay; the one for these is updated."""
    fresh = kernel_lock.KernelLock(schema=kernel_lock.SCHEMA, variants=[], recipes={}, model=model)
    if not path.exists():
        return fresh
    try:
        return kernel_lock.read(path)
    except kernel_lock.LockError as exc:
        print(f"jitwarm: replacing it: {exc}", file=sys.stderr)
        return fresh


def _named(cache, work, fp: dict, recipe_dir) -> dict | None:
    """{entry name: the recipe of its binary} of a shape warm here, or None."""
    if records.shape_reasons(cache, work.key, fp):
        return None
    record, _ = records.read_shape(cache.path, work.key)
    found = recipes.by_digest(recipe_dir, {e.sha256 for e in record.entries.values() if e.sha256})
    if not record.entries or any(e.sha256 not in found for e in record.entries.values()):
        return None
    return {name: found[e.sha256] for name, e in record.entries.items()}
