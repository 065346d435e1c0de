"""Stand-in for sgl-deep-gemm 0.1.x, selected by JITWARM_DEEP_GEMM_MODULE=fake_deep_gemm
(tests only). The calls and knobs are in fake_kernels.py; this module is the 0.1.x cache.

It behaves like DeepGEMM 0.1.x's JIT at the process boundary: a kernel is looked up under
$DG_JIT_CACHE_DIR/cache/kernel.<name>.<hash>/ (one root, the value taken literally),
"compiled" into tmp/<pid>-<uuid>/ and published by directory rename when missing, and its
binary is opened when loaded.

  DG_JIT_NVCC_COMPILER  compile through this "nvcc" (tests/fakes/fake_nvcc or jitwarm's
                        shim), exactly as deep_gemm 0.1.x invokes nvcc; without it the
                        stand-in writes the binary itself
"""

import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import fake_kernels

_loaded: set[str] = set()  # DeepGEMM's in-process runtime cache


def get_mk_alignment_for_contiguous_layout() -> int:
    return 128


def _entry_name(family: str, *parts) -> str:
    salt = os.environ.get("FAKE_DG_SALT", "")
    digest = hashlib.sha256(repr((family, parts, salt)).encode()).hexdigest()[:16]
    return f"kernel.{family}.{digest}"


def _build(family: str, parts: tuple, code: str) -> None:
    name = _entry_name(family, *parts)
    if name in _loaded:
        return
    root = Path(os.environ["DG_JIT_CACHE_DIR"])
    entry = root / "cache" / name
    if not ((entry / "kernel.cu").is_file() and (entry / "kernel.cubin").is_file()):
        tmp = root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        (tmp / "kernel.cu").write_text(f"// entry: {name}\n{code}\n")
        nvcc = os.environ.get("DG_JIT_NVCC_COMPILER")
        if nvcc:
            # Like deep_gemm 0.1.x: `cd <tmp> && <nvcc> <tmp>/kernel.cu -cubin -o <tmp>/kernel.cubin <flags>`.
            done = subprocess.run([nvcc, str(tmp / "kernel.cu"), "-cubin", "-o", str(tmp / "kernel.cubin"),
                                   "-O3", "--gpu-architecture=sm_90a"], cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"NVCC compilation failed: {done.stdout}{done.stderr}", flush=True)
                raise RuntimeError("Assertion error: NVCC compilation failed")
        else:
            time.sleep(float(os.environ.get("FAKE_DG_COMPILE_S", "0")))
            (tmp / "kernel.cubin").write_bytes(b"\x7fCUBIN" + code.encode())
            fake_kernels.log_compile(name)
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            pass  # someone else published it first
    with open(entry / "kernel.cubin", "rb") as fh:  # "loading" reads the binary
        if b"CUBIN" not in fh.read(8):
            raise RuntimeError(f"CUDA error: device kernel image is invalid ({name})")
    _loaded.add(name)


def jitwarm_executor(dg, kind, n, k, groups, max_m, aligned=False):
    return fake_kernels.executor(_build, kind, n, k, groups, "0.1.x", aligned=aligned)
