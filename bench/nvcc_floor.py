"""How fast can the shipped set's kernels be compiled at all? (the cold warm's floor)

Runs bench/cold_warm_shipped.py once, cold, with a recorder in front of the real nvcc that
keeps each kernel's source and argv. Then runs those same nvcc commands again with no
Python, GPU or scheduling in the way: P at once from a plain thread pool, first in the
order the warm ran them, then longest first (by the first pass's times), then at half
the cores, each at the build path deep_gemm used with its argv. Each rebuilt cubin is
compared with the one the warm put in the cache; on the H200 most differ in bytes even so
(bench/results/nvcc_floor-h200-2026-12-02.json), so the count is reported, not required.
Prints and writes one JSON with the cold warm beside the passes.

Usage: python bench/nvcc_floor.py --work DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

sys.path.insert(0, str(REPO))
from tasks.host import fingerprint  # noqa: E402
from tasks.state import layouts  # noqa: E402

RECORDER = """#!/bin/sh
case "$1" in *.cu)
    d="$NVCC_RECORD_DIR/$(date +%s%N).$$"; mkdir -p "$d"; cp "$1" "$d/kernel.cu"
    { printf '%s\\0' "$PWD"; for a in "$@"; do printf '%s\\0' "$a"; done; } > "$d/argv" ;;
esac
exec "$NVCC_RECORD_REAL" "$@"
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    opts.work.mkdir(parents=True)
    layout = layouts.detect(fingerprint.deep_gemm_module())
    base = {k: v for k, v in os.environ.items() if k not in layout.nvcc_env}
    real = fingerprint.nvcc_path(base, layout)
    recorder, recorded = opts.work / "nvcc-recorder.sh", opts.work / "recorded"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    env = {**base, layout.nvcc_env[0]: str(recorder), "NVCC_RECORD_REAL": real, "NVCC_RECORD_DIR": str(recorded)}
    cold_json, warm_dir = opts.work / "cold.json", opts.work / "warm"
    subprocess.run([sys.executable, str(REPO / "bench" / "cold_warm_shipped.py"), "--work", str(warm_dir),
                    "--out", str(cold_json)], env=env, check=False, stdout=subprocess.DEVNULL)
    cold = json.loads(cold_json.read_text()) if cold_json.exists() else {}
    calls = [_load(d) for d in sorted(recorded.iterdir())] if recorded.exists() else []
    cores = len(os.sched_getaffinity(0))
    cubins = _cache_cubins(warm_dir / "cache")
    first = _pass(real, calls, cores, cubins)
    by_length = sorted(range(len(calls)), key=lambda i: -first["durations"][i])
    longest_first = _pass(real, [calls[i] for i in by_length], cores, cubins)
    half = _pass(real, [calls[i] for i in by_length], max(1, cores // 2), cubins)
    import_s = (cold.get("cold_warm") or {}).get("torch_import_s") or 0
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": cold.get("fingerprint"), "cpu_cores": cores,
        "lscpu": _lscpu(), "nvcc_calls_recorded": len(calls),
        "cold_warm": cold.get("cold_warm"),
        "passes": {"recorded_order": _public(first), "longest_first": _public(longest_first),
                   "longest_first_half_cores": _public(half)},
        # The cold warm cannot end before its kernels are compiled, nor compile before torch is imported.
        "floor_s": round(min(first["wall_s"], longest_first["wall_s"]) + import_s, 2),
        "target_wall_s": (cold.get("cold_warm") or {}).get("target_wall_s"),
    }
    return emit(result, opts.out)


def _load(d: Path) -> dict:
    cwd, *argv = d.joinpath("argv").read_bytes().decode().rstrip("\0").split("\0")
    return {"cwd": cwd, "argv": argv, "source": d / "kernel.cu"}


def _cache_cubins(cache: Path) -> dict[bytes, bytes]:
    """kernel.cu text -> kernel.cubin bytes, for every entry the warm left in the cache."""
    found = {}
    for src in cache.rglob("kernel.cu"):
        cubin = src.with_name("kernel.cubin")
        if cubin.exists():
            found[src.read_bytes()] = cubin.read_bytes()
    return found


def _pass(real: str, calls: list[dict], parallel: int, cubins: dict) -> dict:
    t0 = time.monotonic()
    problems: list[dict] = []

    def one(call: dict) -> tuple[float, float, int, bool | None]:
        # At deep_gemm's own build path (its build directory is gone once renamed into the
        # cache): the cubin embeds the source's path (assert messages), so no other path
        # could give the same bytes.
        source = Path(call["argv"][0])
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(call["source"], source)
        start = time.monotonic() - t0
        ran = subprocess.run([real, *call["argv"]], cwd=call["cwd"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        end, rc = time.monotonic() - t0, ran.returncode
        if rc and not problems:
            problems.append({"argv": [real, *call["argv"]], "cwd": call["cwd"], "stderr": ran.stderr[-1500:]})
        want = cubins.get(call["source"].read_bytes())
        out = source.with_name("kernel.cubin")
        same = None if want is None or not out.exists() else out.read_bytes() == want
        shutil.rmtree(source.parent, ignore_errors=True)
        return start, end, rc, same

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ThreadPoolExecutor(parallel) as pool:
        rows = list(pool.map(one, calls))
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    durations = [end - start for start, end, _, _ in rows]
    return {"parallel": parallel, "wall_s": round(wall, 2), "cpu_s": round(cpu, 1),
            "sum_nvcc_wall_s": round(sum(durations), 1), "failed": sum(rc != 0 for _, _, rc, _ in rows),
            "cubin_identical": sum(s is True for *_, s in rows), "cubin_differs": sum(s is False for *_, s in rows),
            "cubin_not_in_cache": sum(s is None for *_, s in rows), "first_failure": problems[:1],
            "durations": durations}


def _public(p: dict) -> dict:
    out = {k: v for k, v in p.items() if k != "durations"}
    out["durations_s"] = sorted((round(d, 2) for d in p["durations"]), reverse=True)
    return out


def _lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    keep = ("Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "CPU(s)", "On-line CPU(s) list")
    rows = (line.partition(":") for line in text.splitlines())
    return {k.strip(): v.strip() for k, _, v in rows if k.strip() in keep}


if __name__ == "__main__":
    sys.exit(main())
