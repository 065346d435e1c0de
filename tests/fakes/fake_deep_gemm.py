"""Stand-in for sgl-deep-gemm 0.1.x, selected by JITWARM_DEEP_GEMM_MODULE=fake_deep_gemm
(tests only). The calls and knobs are in fake_kernels.py; this module is the 0.1.x cache.

It behaves like DeepGEMM 0.1.x's JIT at the process boundary: a kernel is looked up under
$DG_JIT_CACHE_DIR/cache/kernel.<name>.<hash>/ (one root, the value taken literally),
"compiled" into tmp/<pid>-<uuid>/ and published by directory rename when missing, and its
binary is opened when loaded. <hash> is 0.1.2's own key of the name, nvcc's release, the flags
and kernel.cu (tasks/state/kernel_keys.py, checked against real 0.1.2 entries), so a new nvcc
renames every kernel as it does. kernel.cu's first line names the kernel whatever the
toolchain (`// entry: kernel.<name>.<id>`): the stand-in nvcc logs that line.

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
from tasks.state import kernel_keys

_loaded: set[str] = set()  # DeepGEMM's in-process runtime cache


def get_mk_alignment_for_contiguous_layout() -> int:
    return 128


FLAGS = ["-O3", "--gpu-architecture=sm_90a"]
_names: dict[tuple, tuple[str, str]] = {}  # (family, parts) -> (entry name, kernel.cu), once per process
_nvcc: dict = {}  # its --version text


def _entry(family: str, parts: tuple, code: str) -> tuple[str, str]:
    if (family, parts) not in _names:
        salt = os.environ.get("FAKE_DG_SALT", "")
        ident = f"kernel.{family}.{hashlib.sha256(repr((family, parts, salt)).encode()).hexdigest()[:16]}"
        text = f"// entry: {ident}\n{code}\n"
        argv = [kernel_keys.SRC, "-cubin", "-o", kernel_keys.OUT, *FLAGS]
        _names[(family, parts)] = kernel_keys.legacy_entry(family, text, argv, kernel_keys.Toolchain(_nvcc_version())), text
    return _names[(family, parts)]


def _nvcc_version() -> str:
    """What deep_gemm 0.1.x's key takes of nvcc (its release), asked once a process like its compiler."""
    if "version" not in _nvcc:
        nvcc = os.environ.get("DG_JIT_NVCC_COMPILER")
        _nvcc["version"] = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout if nvcc \
            else "Cuda compilation tools, release 13.0, V13.0.88"
    return _nvcc["version"]


def _build(family: str, parts: tuple, code: str) -> None:
    name, text = _entry(family, parts, code)
    if name in _loaded:
        return
    root = Path(os.environ["DG_JIT_CACHE_DIR"])
    entry = root / "cache" / name
    if not ((entry / "kernel.cu").is_file() and (entry / "kernel.cubin").is_file()):
        tmp = root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        (tmp / "kernel.cu").write_text(text)
        nvcc = os.environ.get("DG_JIT_NVCC_COMPILER")
        if nvcc:
            # Like deep_gemm 0.1.x: `cd <tmp> && <nvcc> <tmp>/kernel.cu -cubin -o <tmp>/kernel.cubin <flags>`.
            done = subprocess.run([nvcc, str(tmp / "kernel.cu"), "-cubin", "-o", str(tmp / "kernel.cubin"), *FLAGS],
                                  cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"NVCC compilation failed: {done.stdout}{done.stderr}", flush=True)
                raise RuntimeError("Assertion error: NVCC compilation failed")
        else:
            time.sleep(float(os.environ.get("FAKE_DG_COMPILE_S", "0")))
            (tmp / "kernel.cubin").write_bytes(b"\x7fCUBIN" + code.encode())
            fake_kernels.log_compile(text.split("\n", 1)[0].removeprefix("// entry: "))
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
