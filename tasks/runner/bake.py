"""Bake: on a host with nvcc and no GPU (JITWARM_GPU declares the GPU the cache is for), build
the entries that known sources name (a kernel lock beside the model, or an earlier warm's
records and recipes: tasks/runner/known.py) with nvcc alone, no torch, no deep_gemm.

Nothing here can replay, so a baked shape is not proven: its record says baked (not ok), its
targets stay stale, and the entries are pushed without a replay proof when the remote is
writable. A warm on the declared GPU then pulls them (or finds them in the root it inherits)
and proves each shape with its replay; one that compiles anything there is warmed by
discovery, and the warm says so.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tasks import session as run_state
from tasks.runner import kernel_queue, known as known_sources, pool, rename, staging
from tasks.session import Session
from tasks.state import entries


def bake(session: Session, fp: dict, works, store: Path, base_env: dict) -> tuple[dict, dict[str, str]]:
    """Build what known sources give for `works`: ({key: KnownShape}, {recipe key: why it failed})."""
    cache, settings = session.root, session.settings
    env = pool.shim_env(store, base_env, cache.layout)
    recipe_dir = Path(env["JITWARM_RECIPES"]) if "JITWARM_RECIPES" in env else None
    if recipe_dir is None:  # JITWARM_KERNEL_QUEUE=off: no queue, no recipes
        return {}, {}
    renamer = rename.Renamer(cache, fp, recipe_dir)
    found = known_sources.plan(cache, works, fp, recipe_dir, pool.locks(settings, fp, renamer.near), renamer)
    pool.say_renamed(renamer)
    if not found:
        print(f"nothing to bake for the declared {fp['gpu.declared']}: no kernel lock beside the models and no "
              f"earlier warm here names these shapes' kernels (doit lock takes one where they are warm)", flush=True)
        return {}, {}
    work_dir = staging.run_dir(cache.path, "bake")
    work_dir.mkdir(parents=True)
    ready = {key: work_dir / f"ready-{i}" for i, key in enumerate(found)}
    lander = known_sources.Lander(cache, store, env["JITWARM_REAL_NVCC"], found, ready)
    queue = kernel_queue.KernelQueue(store, work_dir / "kqueue", recipe_dir, env, pool.usable_cores(settings),
                                     run_state.MAIN_PID, on_done=lander.done)
    todo = known_sources.recipes_of(found)
    print(f"baking {len(found)} shapes for the declared {fp['gpu.declared']}: {len(todo)} kernels from known "
          f"sources, no GPU here", flush=True)
    started = time.monotonic()
    lander.start()
    queue.submit_known(todo)
    queue.start()
    try:
        deadline = started + settings.shape_timeout_s
        while not all(p.exists() for p in ready.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        queue.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    failed = {**lander.failed, **queue.failed}  # nvcc's own line where there is one
    print(f"baked {lander.written} entries in {time.monotonic() - started:.1f}s"
          + (f"; {len(failed)} kernels failed" if failed else ""), flush=True)
    return found, failed


def complete(cache, shape: known_sources.KnownShape) -> dict | None:
    """The shape's entries as a record holds them, if every one is complete now."""
    described = {name: entries.describe(cache, name) for name in shape.names}
    return None if None in described.values() else described
