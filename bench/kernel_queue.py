"""The kernel queue and known sources against the nvcc floor, side by side in one run.

On one machine, for the shipped planned targets (or --models):
  A. a cold `doit warm` with JITWARM_KERNEL_QUEUE=off: workers compile what they find;
  B. a cold `doit warm` with the kernel queue (the default): workers never wait on nvcc, and find
     kernels with stub binaries (tasks/runner/stubs.py);
  W. B with JITWARM_DISCOVERY=wait: workers defer a call until its kernel is built, as before stubs;
  F. the floor: every kernel B compiled, from the recipes B recorded, compiled again by a
     kernel queue alone (one nvcc per core, longest first) into an empty store, plus B's
     torch import: nvcc_floor.py's "all at once, longest first" pass;
  C. B's root with every entry and the shim's store deleted (records and recipes kept, as on a
     runner that lost its cache): the lost entries are written from their known sources and
     only replayed (tasks/runner/known.py);
  D. B's root with every other entry and the store deleted: a warm proportional to what is missing;
  E. a fresh runner: an empty root (no records, recipes or store) with the kernel lock
     `doit lock` took from B beside the models.
  U. a toolchain upgrade: B's root as it is, warmed through an nvcc whose `--version` reports the
     next minor release (it runs the same nvcc): deep_gemm keys every kernel anew, and jitwarm
     names the new entries itself from B's recipes (tasks/runner/rename.py), compiles them and
     replays; a wrong name would show as a replay compiling it.
  V. deep_gemm installed elsewhere (a new environment): B's root warmed with a copy of the
     package first on PYTHONPATH; 0.1.x keys kernels on its include path, so every entry is
     renamed and its recipe's include path rewritten (0.2.x does not: nothing to rebuild).
Every warm's replays must compile 0. Targets: B <= 1.5 F, C, E and U <= 1.15 F, D <= 0.6 B.
Prints and writes one JSON.

Usage: python bench/kernel_queue.py --work DIR [--models NAME...] [--out FILE] [--skip-queue-off] [--trace]
       [--cases wcdeuv]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit, entry_names  # noqa: E402

sys.path.insert(0, str(REPO))
from tasks.host import fingerprint, packages  # noqa: E402
from tasks.runner import kernel_queue, pool  # noqa: E402
from tasks.state import layouts, recipes  # noqa: E402

MODELS = ("deepseek-v3-0324", "deepseek-v3.2", "glm-5-fp8", "mimo-v2-flash", "mimo-v2.5")


def warm(work: Path, root: Path, **env_extra) -> dict:
    keep = ("JITWARM_DEEP_GEMM_MODULE", "JITWARM_CACHE_LAYOUT")  # a CPU trial through the stand-ins
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "JITWARM_")) or k in keep}
    env.update({"JITWARM_MODELS_DIR": str(work / "models"), "DG_JIT_CACHE_DIR": str(root),
                "JITWARM_DOIT_DB": str(root.parent / f"{root.name}.db"), **env_extra})
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "warm"], env=env,
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    wall = round(time.monotonic() - started, 2)
    shapes = [json.loads(p.read_text()) for p in (root / "jitwarm" / "shapes").glob("*.json")]
    summary = next((line for line in out.stdout.splitlines() if line.startswith("compiled ")), "")
    found = re.search(r"torch import ([0-9.]+)s", summary)
    result = {"rc": out.returncode, "wall_s": wall, "entries": len(entry_names(root)), "pool_summary": summary,
              "torch_import_s": float(found.group(1)) if found else None,
              "replay_new_entries": sum((r.get("replay") or {}).get("new_entries", 0) for r in shapes),
              # shapes whose known-source replay compiled something, then warmed by discovery
              "discovery_fallbacks": out.stdout.count("warming it by discovery"),
              "all_ok": all(r["ok"] for r in shapes)}
    if out.returncode:
        result["output_tail"] = (out.stdout + out.stderr)[-3000:]
    if renamed := [line for line in out.stdout.splitlines() if "warmed under another toolchain" in line]:
        result["renamed"] = renamed  # tasks/runner/pool.say_renamed: renamed, or why not
    return result


def floor(recipe_dir: Path, scratch: Path) -> dict:
    """Every recipe compiled again by a kernel queue alone, into an empty store."""
    store = scratch / "store"
    store.mkdir(parents=True)
    env = pool.shim_env(store, None, layouts.detect(fingerprint.deep_gemm_module()))
    found = recipes.for_digests(recipe_dir, {d for p in recipe_dir.iterdir() if (p / "digests").is_file()
                                             for d in (p / "digests").read_text().split()})
    queue = kernel_queue.KernelQueue(store, scratch / "queue", scratch / "recipes", env,
                                     len(os.sched_getaffinity(0)), os.getpid())
    started = time.monotonic()
    queue.submit_known(found)
    queue.start()
    while len(queue.compiled) + len(queue.failed) < len(found):
        time.sleep(0.01)
    wall = round(time.monotonic() - started, 2)
    queue.stop()
    return {"kernels": len(found), "compiled": len(queue.compiled), "failed": len(queue.failed), "nvcc_wall_s": wall,
            "nvcc_sum_s": round(sum(r.seconds for r in found), 1)}


def lose(root: Path, every: int) -> int:
    """Delete every `every`-th cache entry (1: all) and the shim's stores; keep records and recipes."""
    names = sorted(entry_names(root))
    gone = names[::every]
    for name in gone:
        shutil.rmtree(root / "cache" / name)
    shutil.rmtree(root / "jitwarm" / "kstore", ignore_errors=True)
    return len(gone)


def upgraded_nvcc(work: Path) -> tuple[Path, str]:
    """An nvcc that reports the next minor release and otherwise runs this host's nvcc: a wrapper
    script naming only that nvcc's path and the file with the text it reports."""
    real = fingerprint.nvcc_path(os.environ, layouts.detect(fingerprint.deep_gemm_module()))
    text = subprocess.run([real, "--version"], capture_output=True, text=True, timeout=60).stdout
    major, minor = re.search(r"release (\d+)\.(\d+)", text).groups()
    newer = text.replace(f"release {major}.{minor}, V{major}.{minor}.", f"release {major}.{int(minor) + 1}, "
                                                                       f"V{major}.{int(minor) + 1}.")
    (work / "nvcc-next").mkdir(exist_ok=True)
    (work / "nvcc-next" / "version.txt").write_text(newer)
    wrapper = work / "nvcc-next" / "nvcc"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec cat "{work / "nvcc-next" / "version.txt"}"\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, re.search(r"release [\d.]+, V[\d.]+", newer).group(0)


def moved_install(work: Path) -> str:
    """PYTHONPATH with a copy of deep_gemm first (the dist's metadata stays where it is)."""
    package = packages.package_dir(fingerprint.deep_gemm_module())
    site = work / "site-moved"
    if package.is_dir():
        shutil.copytree(package, site / package.name, symlinks=True)
    else:  # a stand-in module
        site.mkdir()
        shutil.copy(package, site / package.name)
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-queue-off", action="store_true", help="leave out A (no target depends on it)")
    parser.add_argument("--trace", action="store_true", help="B with JITWARM_TRACE=1 (timings in its logs)")
    parser.add_argument("--cases", default="wcdeuv", help="which of W, C, D, E, U, V to run after B and F (default all)")
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    (opts.work / "models").mkdir(parents=True)
    for name in opts.models:
        shutil.copy(REPO / "models" / f"{name}.toml", opts.work / "models")
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "fingerprint": fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module())),
                    "cpu_cores": len(os.sched_getaffinity(0)), "models": opts.models}
    if not opts.skip_queue_off:
        result["a_cold_no_queue"] = warm(opts.work, opts.work / "a", JITWARM_KERNEL_QUEUE="off")
        print(json.dumps(result["a_cold_no_queue"]), flush=True)
    b = opts.work / "b"
    result["b_cold_queue"] = warm(opts.work, b, **({"JITWARM_TRACE": "1"} if opts.trace else {}))
    print(json.dumps(result["b_cold_queue"]), flush=True)
    with tempfile.TemporaryDirectory(dir=opts.work) as scratch:
        result["f_nvcc_floor"] = floor(b / "jitwarm" / "recipes", Path(scratch))
    f = result["f_nvcc_floor"]
    f["floor_s"] = round(f["nvcc_wall_s"] + (result["b_cold_queue"]["torch_import_s"] or 0), 2)
    print(json.dumps(f), flush=True)
    for name, every in (("c_known_all_lost", 1), ("d_known_half_lost", 2)):
        if name[0] in opts.cases:
            copy = opts.work / name
            shutil.copytree(b, copy, symlinks=True)
            shutil.copy(opts.work / "b.db", opts.work / f"{name}.db") if (opts.work / "b.db").exists() else None
            lost = lose(copy, every)
            result[name] = {"entries_deleted": lost, **warm(opts.work, copy)}
            print(json.dumps(result[name]), flush=True)
    if "w" in opts.cases:
        result["w_cold_wait"] = warm(opts.work, opts.work / "w", JITWARM_DISCOVERY="wait")
        result["w_cold_wait"]["same_entries_as_b"] = entry_names(opts.work / "w") == entry_names(b)
        print(json.dumps(result["w_cold_wait"]), flush=True)
    if "e" in opts.cases:
        locked = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "lock"], cwd=REPO,
                                env={**os.environ, "JITWARM_MODELS_DIR": str(opts.work / "models"),
                                     "DG_JIT_CACHE_DIR": str(b), "JITWARM_DOIT_DB": str(opts.work / "b.db")},
                                capture_output=True, text=True, timeout=120)
        result["e_fresh_with_lock"] = {"lock_rc": locked.returncode,
                                       "lock_output": locked.stdout[-2000:] + locked.stderr[-1000:],
                                       **warm(opts.work, opts.work / "e")}
        print(json.dumps(result["e_fresh_with_lock"]), flush=True)
    if "u" in opts.cases:
        upgraded = opts.work / "u_nvcc_upgrade"
        shutil.copytree(b, upgraded, symlinks=True)
        nvcc, reported = upgraded_nvcc(opts.work)
        before = len(entry_names(upgraded))
        result["u_nvcc_upgrade"] = {"nvcc_reports": reported, "entries_before": before,
                                    **warm(opts.work, upgraded, DG_JIT_NVCC_COMPILER=str(nvcc))}
        print(json.dumps(result["u_nvcc_upgrade"]), flush=True)
    if "v" in opts.cases:
        moved = opts.work / "v_install_moved"
        shutil.copytree(b, moved, symlinks=True)
        result["v_install_moved"] = warm(opts.work, moved, PYTHONPATH=moved_install(opts.work))
        print(json.dumps(result["v_install_moved"]), flush=True)
    bw = result["b_cold_queue"]["wall_s"]
    r = result["ratios"] = {"b_over_floor": round(bw / f["floor_s"], 3)}
    for key, case in (("w", "w_cold_wait"), ("c", "c_known_all_lost"), ("e", "e_fresh_with_lock"), ("u", "u_nvcc_upgrade"),
                      ("v", "v_install_moved")):
        if case in result:
            r[f"{key}_over_floor"] = round(result[case]["wall_s"] / f["floor_s"], 3)
    if "d_known_half_lost" in result:
        r["d_over_b"] = round(result["d_known_half_lost"]["wall_s"] / bw, 3)
    if "a_cold_no_queue" in result:
        a = result["a_cold_no_queue"]["wall_s"]
        r.update(a_over_floor=round(a / f["floor_s"], 3), b_over_a=round(bw / a, 3))
    proofs = all(result[k]["replay_new_entries"] == 0 and result[k]["rc"] == 0 and not result[k]["discovery_fallbacks"]
                 for k in ("a_cold_no_queue", "b_cold_queue", "w_cold_wait", "c_known_all_lost", "d_known_half_lost", "e_fresh_with_lock",
                           "u_nvcc_upgrade", "v_install_moved")
                 if k in result)
    result["targets_met"] = {"b_le_1.5_floor": r["b_over_floor"] <= 1.5, "replays_compile_0": proofs,
                             **{f"{k}_le_1.15_floor": r[f"{k}_over_floor"] <= 1.15 for k in "ceu" if f"{k}_over_floor" in r}}
    if "d_over_b" in r:
        result["targets_met"]["d_le_0.6_b"] = r["d_over_b"] <= 0.6
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
