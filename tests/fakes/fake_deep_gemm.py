"""Stand-in for deep_gemm, selected by JITWARM_DEEP_GEMM_MODULE=fake_deep_gemm (tests only).

It behaves like DeepGEMM's JIT at the process boundary: a kernel config is chosen from M,
looked up under $DG_JIT_CACHE_DIR/cache/kernel.<name>.<hash>/, "compiled" into tmp/ and
published by directory rename when missing, and its binary is opened when loaded. Every
shape also needs one shared transpose kernel, like the real sm90 FP8 path.

Knobs (environment):
  DG_JIT_NVCC_COMPILER  compile through this "nvcc" (tests/fakes/fake_nvcc or jitwarm's
                        shim), exactly as deep_gemm 0.1.x invokes nvcc
  FAKE_DG_COMPILE_LOG   append one line per compile (entry name) to this file
  FAKE_DG_COMPILE_S     seconds one compile takes (default 0.05)
  FAKE_DG_CRASH_ON      "NxK": print a CUDA error and abort on that shape
  FAKE_DG_HANG_ON       "NxK": start a child, then hang on that shape
  FAKE_DG_SALT          extra text in every kernel hash (stands in for a toolchain change)
  FAKE_DG_TOKEN         extra argv of the hanging child, so a test can find it
  FAKE_DG_REPLAY_EXTRA  replays (not compile workers) need one extra kernel per shape
  FAKE_DG_REPLAY_S      seconds each replay takes to start (to order events in tests)
  FAKE_DG_NO_DEVICE     every executor fails as on a host whose GPU is gone
"""

import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

_loaded: set[str] = set()  # DeepGEMM's in-process runtime cache


def get_mk_alignment_for_contiguous_layout() -> int:
    return 128


def _config(m: int) -> int:
    return 0 if m <= 16 else 1 if m <= 64 else 2 if m <= 256 else 3


def _entry_name(family: str, *parts) -> str:
    salt = os.environ.get("FAKE_DG_SALT", "")
    digest = hashlib.sha256(repr((family, parts, salt)).encode()).hexdigest()[:16]
    return f"kernel.{family}.{digest}"


def _ensure(name: str, code: str) -> None:
    if name in _loaded:
        return
    root = Path(os.environ["DG_JIT_CACHE_DIR"])
    entry = root / "cache" / name
    if not ((entry / "kernel.cu").is_file() and (entry / "kernel.cubin").is_file()):
        tmp = root / "tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        (tmp / "kernel.cu").write_text(f"// entry: {name}\n{code}\n")
        nvcc = os.environ.get("DG_JIT_NVCC_COMPILER")
        if nvcc:
            # Like deep_gemm 0.1.x: `<nvcc> <tmp>/kernel.cu -cubin -o <tmp>/kernel.cubin <flags>`.
            done = subprocess.run([nvcc, str(tmp / "kernel.cu"), "-cubin", "-o", str(tmp / "kernel.cubin"),
                                   "-O3", "--gpu-architecture=sm_90a"], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"NVCC compilation failed: {done.stdout}{done.stderr}", flush=True)
                raise RuntimeError("Assertion error: NVCC compilation failed")
        else:
            time.sleep(float(os.environ.get("FAKE_DG_COMPILE_S", "0.05")))
            (tmp / "kernel.cubin").write_bytes(b"\x7fCUBIN" + code.encode())
            log = os.environ.get("FAKE_DG_COMPILE_LOG")
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{name}\n")
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            pass  # someone else published it first
    with open(entry / "kernel.cubin", "rb") as fh:  # "loading" reads the binary
        if b"CUBIN" not in fh.read(8):
            raise RuntimeError(f"CUDA error: device kernel image is invalid ({name})")
    _loaded.add(name)


class _Executor:
    def __init__(self, kind, n, k, groups):
        self.kind, self.n, self.k, self.groups = kind, n, k, groups
        self.tag = f"{n}x{k}"

    def execute(self, m):
        if os.environ.get("FAKE_DG_CRASH_ON") == self.tag:
            print("CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
            os.abort()
        if os.environ.get("FAKE_DG_HANG_ON") == self.tag:
            token = os.environ.get("FAKE_DG_TOKEN", "")
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", token])
            print("hanging", flush=True)
            time.sleep(3600)
        _ensure(_entry_name("transpose_fp32"), "transpose")
        if os.environ.get("FAKE_DG_REPLAY_EXTRA") and "JITWARM_BUSY_FLAG" not in os.environ:
            # Only replays lack the compile pool's busy flag: a kernel the pool never built.
            _ensure(_entry_name("replay_only", self.n, self.k), "replay-only")
        family = {"GEMM_NT_F8F8BF16": "sm90_fp8_gemm_1d2d"}.get(self.kind, "sm90_m_grouped_fp8_gemm")
        cfg = _config(m)
        _ensure(_entry_name(family, self.kind, self.n, self.k, self.groups, cfg),
                f"{family}<{self.kind},{self.n},{self.k},{self.groups},{cfg}>")

    def sync(self):
        pass


def jitwarm_executor(dg, kind, n, k, groups, max_m):
    if os.environ.get("FAKE_DG_NO_DEVICE"):
        from tasks.worker import EnvironmentProblem
        raise EnvironmentProblem("no CUDA device visible to torch")
    if "JITWARM_BUSY_FLAG" not in os.environ:  # a replay, not a compile worker
        time.sleep(float(os.environ.get("FAKE_DG_REPLAY_S", "0")))
    return _Executor(kind, n, k, groups)
