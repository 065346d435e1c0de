"""What a replay sweep costs on the host when its launches are captured (tasks/runner/child/replay.py).

One large DeepSeek-V3.2 shape (NORMAL N=7168 K=16384) over the default 16384-value M list,
on a cache this script warms first. Then the same sweep, timed, captured in CUDA graphs
of 64, 256 and 1024 calls, with the peak GPU memory of each; and an eager sweep over
every 16th M, to show what running the GEMMs costs. Prints one JSON result.

Usage: python bench/replay_capture.py --work DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from _emit import emit, entry_names  # noqa: E402

N, K, M_MAX = 7168, 16384, 16384


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    opts.work.mkdir(parents=True)
    os.environ["DG_JIT_CACHE_DIR"] = str(opts.work)
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "shape": {"kind": "GEMM_NT_F8F8BF16", "n": N, "k": K}, "m_count": M_MAX}
    started = time.monotonic()
    import torch
    result["torch_import_s"] = round(time.monotonic() - started, 3)
    started = time.monotonic()
    import deep_gemm
    result["deep_gemm_import_s"] = round(time.monotonic() - started, 3)

    from tasks.runner.child import executors
    from tasks.runner.child import replay

    executor = executors.create(deep_gemm, "GEMM_NT_F8F8BF16", N, K, 1, M_MAX)
    m_values = list(range(1, M_MAX + 1))
    started = time.monotonic()
    for first in range(0, M_MAX, 256):  # warm: compiles every kernel the sweep needs
        replay.sweep_chunk(executor, m_values[first:first + 256], executor.capture)
    executor.sync()
    result["warm_s"] = round(time.monotonic() - started, 2)
    result["entries"] = len(entry_names(opts.work))
    result["captured"] = {}
    for chunk in (64, 256, 1024):
        torch.cuda.reset_peak_memory_stats()
        started = time.monotonic()
        for first in range(0, M_MAX, chunk):
            replay.sweep_chunk(executor, m_values[first:first + chunk], executor.capture)
        executor.sync()
        result["captured"][chunk] = {"seconds": round(time.monotonic() - started, 3),
                                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    started = time.monotonic()
    for m in m_values[::16]:
        executor.execute(m)
    executor.sync()
    result["eager_every_16th_s"] = round(time.monotonic() - started, 3)
    result["entries_after"] = len(entry_names(opts.work))
    result["gpu"] = torch.cuda.get_device_name()
    result["versions"] = {"torch": torch.__version__, "deep_gemm": getattr(deep_gemm, "__version__", None)}
    return emit(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
