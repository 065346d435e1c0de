"""What both deep_gemm stand-ins share: the GEMM calls and the test knobs (tests only).

A call picks a kernel config from M, as DeepGEMM does, and asks its stand-in's cache
(`build`) for the kernels it needs: one scale transpose shared by every shape, like the
real sm90 FP8 path, and the GEMM kernel of its (type, N, K, groups, config). A compile
worker's `aligned` executor of a type with token scales skips the transpose, as the real
ones do on SM90 (tasks/runner/child/executors.py); its `probe` makes the call with it. The cache
layouts differ per stand-in (fake_deep_gemm: 0.1.x, fake_deep_jit: 0.2.x DeepJIT).

Knobs (environment):
  FAKE_DG_COMPILE_LOG   append one line per compile (entry name) to this file
  FAKE_DG_COMPILE_S     seconds one compile takes (default 0)
  FAKE_DG_CRASH_ON      "NxK": print a CUDA error and abort on that shape
  FAKE_DG_HANG_ON       "NxK": start a child, then hang on that shape
  FAKE_DG_SALT          extra text in every kernel hash (stands in for a toolchain change)
  FAKE_DG_TOKEN         extra argv of the hanging child, so a test can find it
  FAKE_DG_REPLAY_EXTRA  replays (not compile workers) need one extra kernel per shape
  FAKE_DG_REPLAY_S      seconds each replay takes to start (to order events in tests)
  FAKE_DG_NO_DEVICE     every executor fails as on a host whose GPU is gone
  FAKE_DG_CAPTURE_FAIL  "NxK": a call of that shape inside a graph capture fails, as a
                        capture-unsafe call does on a GPU (eager calls still work)
  FAKE_DG_CAPTURE_FAIL_ONCE  "NxK": only that shape's first captured call in each process
                        fails, as a first use that needs the device does
  FAKE_DG_RAISE_ON      "NxK:text": every call of that shape raises RuntimeError(text),
                        captured or not, as DeepGEMM refuses a layout it has no kernel for
  FAKE_DG_CALL_LOG      append "compile|replay captured|eager <N>x<K> <m>" per call to this file
  FAKE_DG_DEVICE_LOG    append "compile|replay <pid> <CUDA_VISIBLE_DEVICES> <time> <NxK>" per executor
                        to this file (and "slow ..." after each FAKE_DG_SLOW_ON sleep)
  FAKE_DG_SLOW_ON       "NxK:seconds": in compile workers, every call of that shape first sleeps
"""

import contextlib
import os
import subprocess
import sys
import time

from tasks.plan.gemms import Kind

# kind -> (cache family, the template it instantiates, DeepGEMM's GemmType), as sgl-deep-gemm 0.1.2
# names them on the H200 (tests/data/kernels/0.1.x).
FAMILIES = {
    "GEMM_NT_F8F8BF16": ("sm90_fp8_gemm_1d2d", "sm90_fp8_gemm_1d2d_impl", "Normal"),
    "GEMM_NT_F8F8BF16_BLOCK32": ("sm90_fp8_gemm_1d1d", "sm90_fp8_gemm_1d1d_impl", "Normal"),
    "GROUPED_GEMM_NT_F8F8BF16_CONTIG": ("sm90_m_grouped_fp8_gemm_contiguous_1d2d", "sm90_fp8_gemm_1d2d_impl",
                                        "MGroupedContiguous"),
    "GROUPED_GEMM_NT_F8F8BF16_MASKED": ("sm90_fp8_m_grouped_gemm_masked_1d2d", "sm90_fp8_gemm_1d2d_impl",
                                        "MGroupedMasked"),
    "GROUPED_GEMM_NT_BF16_CONTIG": ("sm90_m_grouped_bf16_gemm_contiguous", "sm90_bf16_gemm_impl",
                                    "MGroupedContiguous"),
    "GROUPED_GEMM_NT_BF16_MASKED": ("sm90_bf16_m_grouped_gemm_masked", "sm90_bf16_gemm_impl", "MGroupedMasked"),
    "GEMM_NT_BF16BF16F32": ("sm90_bf16_gemm", "sm90_bf16_gemm_impl", "Normal"),
}
TOKEN_SCALES = {kind.value for kind in Kind if kind.token_scales}  # the types whose transpose workers skip
_OTHER = ("sm100_fp8_fp4_gemm_1d1d", "sm100_fp8_fp4_gemm_1d1d_impl", "Normal")  # a later release's types
# The DSA indexer's kernels: cache family per layout (0.1.x: the build names in sgl-deep-gemm
# 0.1.2's _C.so; 0.2.x: DeepJIT tags in 0.2.3.post2's), and the template each instantiates.
INDEXER_FAMILIES = {
    "0.1.x": {"logits": "smxx_fp8_mqa_logits", "paged": "smxx_fp8_paged_mqa_logits",
              "schedule": "smxx_paged_mqa_logits_metadata"},
    "0.2.x": {"logits": "sm90_fp8_mqa_logits", "paged": "sm90_fp8_paged_mqa_logits",
              "schedule": "sm90_paged_mqa_logits_metadata"},
}
SMS = 132  # an H100's or H200's SM count: DeepGEMM's get_num_sms()
SPLIT_KV = 256  # block_kv 64 x 4 math warpgroups
_BLOCK_N = (16, 32, 128, 192)  # one per config


def source(kind: str, n: int, k: int, groups: int, cfg: int) -> str:
    """kernel.cu as DeepGEMM generates it: normal GEMMs compile N and K at runtime (0), grouped ones in."""
    _, impl, gemm_type = FAMILIES.get(kind, _OTHER)
    dims = "0, 0, 0" if gemm_type == "Normal" else f"0, {n}, {k}"
    if "bf16" in impl:
        head, tail = "cute::UMMA::Major::K, cute::UMMA::Major::K", (
            f"132,\n        GemmType::{gemm_type}, false,\n        "
            f"{'float' if kind == 'GEMM_NT_BF16BF16F32' else 'cutlass::bfloat16_t'}")
    else:
        head, tail = "cute::UMMA::Major::K", f"132, GemmType::{gemm_type},\n        epilogue::transform::EpilogueIdentity"
    return (f"#include <deep_gemm/impls/{impl.removesuffix('_impl')}.cuh>\n\nusing namespace deep_gemm;\n\n"
            f"static void __instantiate_kernel() {{\n    auto ptr = reinterpret_cast<void*>(&{impl}<\n"
            f"        {head},\n        {dims},\n        {groups},\n        64, {_BLOCK_N[cfg]}, 128,\n"
            f"        128, 128, 32,\n        8,\n        128, 128,\n        1, false,\n        {tail}\n    >);\n}};\n")


TRANSPOSE = ("#include <deep_gemm/impls/smxx_layout.cuh>\n\nusing namespace deep_gemm;\n\n"
             "static void __instantiate_kernel() {\n    auto ptr = reinterpret_cast<void*>(&transpose_fp32<\n"
             "        512, 64, 56\n    >);\n};\n")



def indexer_source(part: str, *args) -> str:
    """kernel.cu of an indexer kernel, laid out as sgl-deep-gemm 0.1.2 writes it."""
    if part == "schedule":
        aligned, = args
        head, name, body = "scheduler/paged_mqa_logits", "sched::smxx_paged_mqa_logits_metadata", \
            f"{aligned}, {SPLIT_KV}, {SMS}, false"
    elif part == "paged":
        heads, dim, next_n = args
        head, name, body = "impls/sm90_fp8_paged_mqa_logits", "sm90_fp8_paged_mqa_logits", \
            f"{next_n}, {heads},\n        {dim}, 64,\n        true, false,\n        3, 3,\n        {SPLIT_KV},\n" \
            f"        128, 512,\n        float"
    else:
        heads, dim = args
        head, name, body = "impls/sm90_fp8_mqa_logits", "sm90_fp8_mqa_logits", \
            f"{heads}, {dim},\n        false,\n        {128 // heads}, 256,\n        3, 3,\n        {SMS},\n" \
            f"        128, 512,\n        float"
    return (f"#include <deep_gemm/{head}.cuh>\n\nusing namespace deep_gemm;\n\nstatic void __instantiate_kernel() {{\n"
            f"    auto ptr = reinterpret_cast<void*>(&{name}<\n        {body}\n    >);\n}};\n")


_FAILED_ONCE: set = set()  # shapes whose one capture failure this process has had
_LOADED: set = set()  # (family, parts) of the kernels this process has loaded


def config(m: int) -> int:
    return 0 if m <= 16 else 1 if m <= 64 else 2 if m <= 256 else 3


class Executor:
    """The knobs are read once, when the executor is made (a worker's environment is set by then),
    and each kernel is looked up once per process: a 16,384-value sweep took 0.39 s of lookups
    per shape, 0.007 s now."""

    def __init__(self, build, kind, n, k, groups, layout="0.1.x", aligned=False):
        self.build, self.kind, self.n, self.k, self.groups = build, kind, n, k, groups
        # Like executors.create(aligned=True) on SM90: token scales passed in DeepGEMM's layout need no transpose.
        self.aligned = aligned and kind in TOKEN_SCALES
        self.indexer = INDEXER_FAMILIES[layout]
        self.tag = f"{n}x{k}"
        self.capturing = False
        env = os.environ
        self.compile_worker = "JITWARM_BUSY_FLAG" in env  # only the compile pool sets it
        self.capture_fail = env.get("FAKE_DG_CAPTURE_FAIL") == self.tag
        self.capture_fail_once = env.get("FAKE_DG_CAPTURE_FAIL_ONCE") == self.tag
        raise_on, _, self.raise_text = env.get("FAKE_DG_RAISE_ON", "").partition(":")
        self.raises = raise_on == self.tag
        self.call_log = env.get("FAKE_DG_CALL_LOG")
        self.crash = env.get("FAKE_DG_CRASH_ON") == self.tag
        slow, _, seconds = env.get("FAKE_DG_SLOW_ON", "").partition(":")
        self.slow_s = float(seconds) if slow == self.tag and self.compile_worker else None
        self.hang = env.get("FAKE_DG_HANG_ON") == self.tag
        # Only replays lack the compile pool's busy flag: a kernel the pool never built.
        self.replay_extra = bool(env.get("FAKE_DG_REPLAY_EXTRA")) and not self.compile_worker
        self.family = FAMILIES.get(kind, _OTHER)[0]

    @contextlib.contextmanager
    def capture(self):
        """Like executors._Base.capture: calls inside build and load their kernels, nothing runs."""
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False

    def execute(self, m):
        if self.capturing and self.capture_fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        if self.capturing and self.capture_fail_once and self.tag not in _FAILED_ONCE:
            _FAILED_ONCE.add(self.tag)
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        if self.raises:
            raise RuntimeError(self.raise_text)
        if self.call_log:
            with open(self.call_log, "a") as fh:
                who = "compile" if self.compile_worker else "replay"
                fh.write(f"{who} {'captured' if self.capturing else 'eager'} {self.tag} {m}\n")
        if self.crash:
            print("CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
            os.abort()
        if self.slow_s is not None:
            time.sleep(self.slow_s)
            device_log("slow", self.tag)
        if self.hang:
            token = os.environ.get("FAKE_DG_TOKEN", "")
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", token])
            print("hanging", flush=True)
            time.sleep(3600)
        if self.kind == "FP8_PAGED_MQA_LOGITS":
            self._paged(m)
            return
        if self.kind == "FP8_MQA_LOGITS":
            self._load(self.indexer["logits"], (self.n, self.k), lambda: indexer_source("logits", self.n, self.k))
            return
        if not self.aligned:
            self._load("transpose_fp32", (), lambda: TRANSPOSE)
        if self.replay_extra:
            self._load("replay_only", (self.n, self.k), lambda: "replay-only")
        cfg = config(m)
        self._load(self.family, (self.kind, self.n, self.k, self.groups, cfg),
                   lambda: source(self.kind, self.n, self.k, self.groups, cfg))

    def probe(self, m):
        """The call as sglang makes it: with the scale transpose."""
        aligned, self.aligned = self.aligned, False
        try:
            self.execute(m)
        finally:
            self.aligned = aligned

    def _paged(self, rows: int) -> None:
        """The decode indexer as sglang calls it: a schedule for all rows, then the logits,
        in chunks of SMS rows (each with its own schedule) when there are more."""
        sizes = [rows] + ([min(SMS, rows - s) for s in range(0, rows, SMS)] if rows > SMS else [])
        for size in sizes:
            aligned = (size + 31) // 32 * 32
            self._load(self.indexer["schedule"], (aligned,), lambda: indexer_source("schedule", aligned))
        self._load(self.indexer["paged"], (self.n, self.k, self.groups),
                   lambda: indexer_source("paged", self.n, self.k, self.groups))

    def _load(self, family: str, parts: tuple, code) -> None:
        """The stand-in's build of `code()`, once per kernel and process: like DeepGEMM's
        in-process runtime cache, a loaded kernel is not looked up again."""
        if (family, parts) not in _LOADED:
            self.build(family, parts, code())
            _LOADED.add((family, parts))

    def sync(self):
        pass


def device_log(who: str, tag: str) -> None:
    if os.environ.get("FAKE_DG_DEVICE_LOG"):
        with open(os.environ["FAKE_DG_DEVICE_LOG"], "a") as fh:
            fh.write(f"{who} {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')} {time.time():.6f} {tag}\n")


def executor(build, kind, n, k, groups, layout="0.1.x", aligned=False):
    device_log("compile" if "JITWARM_BUSY_FLAG" in os.environ else "replay", f"{n}x{k}")
    if os.environ.get("FAKE_DG_NO_DEVICE"):
        from tasks.runner.child.protocol import EnvironmentProblem
        raise EnvironmentProblem("no CUDA device visible to torch")
    if "JITWARM_BUSY_FLAG" not in os.environ:  # a replay, not a compile worker
        time.sleep(float(os.environ.get("FAKE_DG_REPLAY_S", "0")))
    return Executor(build, kind, n, k, groups, layout, aligned)


def log_compile(name: str) -> None:
    log = os.environ.get("FAKE_DG_COMPILE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{name}\n")
