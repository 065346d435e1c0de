"""A stand-in for a real server under `doit watch` (tests only): runs the stand-in deep_gemm
of JITWARM_DEEP_GEMM_MODULE for each `KIND:N:K:GROUPS:M` argument, against the cache that
DG_JIT_CACHE_DIR names (as `doit watch` sets it), then exits with --exit's code."""

import argparse
import importlib
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("calls", nargs="*")
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--env-out", help="write the environment it ran with to this file, as KEY=VALUE lines")
args = parser.parse_args()
if args.env_out:
    with open(args.env_out, "w") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in sorted(os.environ.items()))
dg = importlib.import_module(os.environ["JITWARM_DEEP_GEMM_MODULE"])
for call in args.calls:
    kind, n, k, groups, m = call.split(":")
    dg.jitwarm_executor(dg, kind, int(n), int(k), int(groups), int(m)).execute(int(m))
    print(f"ran {call}", flush=True)
sys.exit(args.exit)
