"""Stand-in for `python -m sglang.compile_deep_gemm`, selected by
JITWARM_COMPILE_MODULE=fake_compile_deep_gemm (tests only).

It takes the server's argv (--model-path, --tp, launch args) and behaves as chosen by
`--served-model-name fake-mode:<mode>` in the launch args (a real sglang option, so the
launch args still parse as sglang's):
  ok          log capture lines and compile their kernels (through the deep_gemm stand-in
              named by JITWARM_DEEP_GEMM_MODULE), exit 0
  newtype     like ok, plus a GEMM_NT_FP4FP4BF16 shape (a type a later sglang might add: no executor)
  warm-crash  compile like ok, then log "Scheduler hit an exception" and hang
  empty       log no capture line (the model uses no DeepGEMM kernel), exit 0
  crash       log "Scheduler hit an exception" while a child keeps running, then hang
  sigquit     log "Received sigquit from a child", then hang
  hang        hang past any timeout
  grandchild  start a grandchild in its own session that ignores SIGTERM, then hang
  chatty      log more than 64 KiB, then behave like ok
Like sglang 0.5.23 it copies SGL_DG_CACHE_DIR over SGLANG_DG_CACHE_DIR and sets
DG_JIT_CACHE_DIR from it (default ~/.cache/sglang/deep_gemm) before the GEMMs run.
Every run appends its argv to $FAKE_CDG_RAN_LOG, so a test can tell whether it ran.
Children it starts carry $FAKE_DG_TOKEN in their argv, so a test can look for survivors.
"""

import importlib
import os
import signal
import subprocess
import sys
import time

SHAPES = [("GEMM_NT_F8F8BF16", 2112, 7168, 1), ("GEMM_NT_F8F8BF16", 7168, 2048, 1),
          ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32)]
M_VALUES = [1, 32, 128, 1024]
SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) if sys.argv[1] == 'ignore' else None; time.sleep(600)"


def spawn(mode: str, new_session: bool) -> None:
    subprocess.Popen([sys.executable, "-c", SLEEPER, mode, os.environ.get("FAKE_DG_TOKEN", "")],
                     start_new_session=new_session)


def log(line: str) -> None:
    print(f"[2026-11-22 10:00:00 TP0] {line}", flush=True)


def warm_up(shapes) -> None:
    if os.environ.get("SGL_DG_CACHE_DIR"):
        os.environ["SGLANG_DG_CACHE_DIR"] = os.environ["SGL_DG_CACHE_DIR"]
    os.environ["DG_JIT_CACHE_DIR"] = os.environ.get("SGLANG_DG_CACHE_DIR") or os.path.expanduser(
        "~/.cache/sglang/deep_gemm")
    dg = importlib.import_module(os.environ.get("JITWARM_DEEP_GEMM_MODULE", "fake_deep_gemm"))
    for kind, n, k, groups in shapes:
        log(f"Try DeepGEMM JIT Compiling for <{kind}> N={n}, K={k}, num_groups={groups} with all Ms.")
        executor = dg.jitwarm_executor(dg, kind, n, k, groups, max(M_VALUES))
        for m in M_VALUES:
            executor.execute(m)


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_CDG_RAN_LOG"):
        with open(os.environ["FAKE_CDG_RAN_LOG"], "a") as fh:
            bmm = os.environ.get("SGLANG_USE_DEEPGEMM_BMM")
            fh.write(" ".join(argv) + (f" [env SGLANG_USE_DEEPGEMM_BMM={bmm}]" if bmm else "") + "\n")
    name = argv[argv.index("--served-model-name") + 1] if "--served-model-name" in argv else ""
    mode = name.removeprefix("fake-mode:") if name.startswith("fake-mode:") else "ok"
    log(f"server_args=ServerArgs(model_path={argv[argv.index('--model-path') + 1]!r}, "
        f"tp_size={argv[argv.index('--tp') + 1]})")
    log("Load weight begin.")
    if mode == "chatty":
        for i in range(2000):
            log(f"chatter {i:05d} " + "x" * 40)
    if mode in ("ok", "chatty", "newtype", "warm-crash"):
        warm_up(SHAPES + ([("GEMM_NT_FP4FP4BF16", 4096, 7168, 1)] if mode == "newtype" else []))
    if mode in ("ok", "chatty", "newtype"):
        log("The server is fired up and ready to roll!")
        return 0
    if mode == "warm-crash":
        log("Scheduler hit an exception: Traceback (most recent call last): RuntimeError: CUDA error")
    if mode == "empty":
        log("The server is fired up and ready to roll!")
        return 0
    if mode == "crash":
        spawn("plain", new_session=False)
        time.sleep(0.5)
        log("Scheduler hit an exception: Traceback (most recent call last): RuntimeError: CUDA error")
    elif mode == "sigquit":
        log("Received sigquit from a child process. It usually means the child failed.")
    elif mode == "grandchild":
        spawn("ignore", new_session=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(600)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
