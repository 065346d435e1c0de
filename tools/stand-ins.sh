# Source this (`. tools/stand-ins.sh`) to try jitwarm on a machine without a GPU: deep_gemm,
# nvcc and the GPU are the test suite's stand-ins (tests/fakes/), and the cache root is a
# scratch directory. The stand-ins write kernel sources as DeepGEMM does, but no real kernel.
# JITWARM_CACHE_LAYOUT=0.2.x with JITWARM_DEEP_GEMM_MODULE=fake_deep_jit tries the 0.2.x layout.
_jitwarm_repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export PYTHONPATH="$_jitwarm_repo/tests/fakes${PYTHONPATH:+:$PYTHONPATH}"
export JITWARM_DEEP_GEMM_MODULE=fake_deep_gemm
export DG_JIT_NVCC_COMPILER="$_jitwarm_repo/tests/fakes/fake_nvcc"
export DG_JIT_CACHE_DIR="${TMPDIR:-/tmp}/jitwarm-stand-ins/cache"
export JITWARM_DOIT_DB="${TMPDIR:-/tmp}/jitwarm-stand-ins/doit.db"
mkdir -p "${TMPDIR:-/tmp}/jitwarm-stand-ins"
unset _jitwarm_repo
echo "jitwarm: stand-ins for deep_gemm, nvcc and the GPU; cache root $DG_JIT_CACHE_DIR"
