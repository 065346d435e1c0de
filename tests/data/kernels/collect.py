"""Regenerate this folder's kernel sources on a GPU host with the real deep_gemm:
`python tests/data/kernels/collect.py OUT_DIR`. One (kind, N, K, groups) per call set,
each with its own N and K, so the parsers' tests can check every field against what
built the entry. Writes OUT_DIR/<layout>/<entry>/kernel.cu and OUT_DIR/<layout>/shapes.json.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tasks.runner.child import executors, replay  # noqa: E402
from tasks.host import packages  # noqa: E402

# (kind, N, K, groups, M values): distinct N and K per row, M values that pick different configs.
CALLS = [
    ("GEMM_NT_F8F8BF16", 1536, 7168, 1, (1, 64, 4096)),
    ("GEMM_NT_F8F8BF16_BLOCK32", 2560, 1536, 1, (1, 4096)),
    ("GROUPED_GEMM_NT_F8F8BF16_CONTIG", 4096, 7168, 8, (128, 4096)),
    ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 7168, 2048, 16, (1, 256)),
    ("GROUPED_GEMM_NT_BF16_CONTIG", 3072, 1024, 4, (128, 4096)),
    ("GROUPED_GEMM_NT_BF16_MASKED", 1024, 3072, 6, (1, 256)),
    ("GEMM_NT_BF16BF16F32", 256, 7168, 1, (1, 4096)),
]


def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgcollect-"))
    os.environ["DG_JIT_CACHE_DIR"] = str(root)
    dg = replay.import_module("deep_gemm")
    layout = packages.deep_gemm_layout_id("deep_gemm")
    shapes, seen = {}, set()
    for kind, n, k, groups, ms in CALLS:
        try:
            ex = executors.create(dg, kind, n, k, groups, max(ms))
            for m in ms:
                ex.execute(m)
            ex.sync()
        except Exception as exc:  # a kind this release lacks: say so, go on
            print(f"{kind}: {exc.__class__.__name__}: {str(exc)[:200]}", flush=True)
            continue
        cache = root / "cache"
        for entry in sorted(p for p in cache.iterdir() if p.name not in seen):
            seen.add(entry.name)
            dest = out / layout / entry.name
            dest.mkdir(parents=True)
            shutil.copy(entry / "kernel.cu", dest / "kernel.cu")
            shapes[entry.name] = {"kind": kind, "n": n, "k": k, "groups": groups, "m_values": list(ms)}
            print(f"{kind} N={n} K={k} groups={groups}: {entry.name}", flush=True)
    (out / layout / "shapes.json").write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
