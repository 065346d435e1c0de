"""How long does `doit watch` take to start its command, over a root of 10k entries? (CPU only)

Target: a watch on a root holding 10k entries starts in under 0.5 s. Times, for
each layout's stand-in and interleaved, `doit watch -- CMD` from its launch until CMD's
first instruction runs, over an empty root and over one of N complete entries; CMD is
`sh -c 'date +%s.%N'`, so its own start-up is about a millisecond. Reports medians; the
difference is what listing and checking the entries costs (inotify adds one watch per root).

Usage: python bench/watch_start.py [--entries N] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _emit import emit

REPO = Path(__file__).resolve().parent.parent
STAND_INS = {"0.1.x": "fake_deep_gemm", "0.2.x": "fake_deep_jit"}


def fill(root: Path, layout: str, count: int) -> None:
    cache = root / "cache"
    cache.mkdir(parents=True)
    for i in range(count):
        name = f"kernel.sm90_fp8_gemm_1d2d.{i:032x}" if layout == "0.1.x" else f"sm90_fp8_gemm_1d2d.{i:032x}"
        entry = cache / name
        entry.mkdir()
        (entry / "kernel.cu").write_text("// stand-in\n")
        (entry / "kernel.cubin").write_bytes(b"\x7fCUBIN")
        if layout == "0.2.x":
            (entry / ".committed").write_text("")


def start_seconds(env: dict) -> float:
    began = time.time()
    out = subprocess.run([sys.executable, "-m", "doit", "watch", "--", "sh", "-c", "date +%s.%N"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip()) - began


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"bench": "watch_start", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "entries": args.entries, "runs": args.runs, "target_s": 0.5, "layouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, module in STAND_INS.items():
            empty, full = Path(tmp) / f"empty-{layout}", Path(tmp) / f"full-{layout}"
            empty.mkdir()
            fill(full, layout, args.entries)
            base = {k: v for k, v in os.environ.items() if not k.startswith(("SGLANG_", "SGL_", "DG_JIT_", "JITWARM_"))}
            base.update({"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fakes"), str(REPO)]),
                         "JITWARM_DEEP_GEMM_MODULE": module, "JITWARM_CACHE_LAYOUT": layout})
            times = {"empty": [], "full": []}
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                for label, root in (("empty", empty), ("full", full)):
                    times[label].append(start_seconds({**base, "DG_JIT_CACHE_DIR": str(root)}))
            med = {label: round(statistics.median(v), 4) for label, v in times.items()}
            result["layouts"][layout] = {"median_start_s": med, "entries_cost_s": round(med["full"] - med["empty"], 4),
                                         "met": med["full"] < 0.5,
                                         "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()}}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
