"""Real kernel sources and toolchain texts the key tests share (tests/state/test_kernel_keys.py,
tests/runner/test_rename.py)."""

from __future__ import annotations

from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "data" / "kernels" / "0.1.x"  # sgl-deep-gemm 0.1.2, on an H200
# deep_gemm 0.1.2's flags on an SM90 with nvcc 13.0, installed in /tmp/site (compiler.hpp's NVCCCompiler).
FLAGS_012 = ["-std=c++20", "--diag-suppress=39,161,174,177,186,940", "--ptxas-options=--register-usage-level=10",
             "-I/tmp/site/deep_gemm/include", "--gpu-architecture=sm_90a",
             "--compiler-options=-fPIC,-O3,-fconcepts,-Wno-deprecated-declarations,-Wno-abi", "-O3",
             "--expt-relaxed-constexpr", "--expt-extended-lambda"]
NVCC_13_0 = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2025 NVIDIA Corporation\n"
             "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0\n")


def tree(tmp_path: Path) -> tuple[Path, str]:
    include = tmp_path / "include"
    (include / "deep_gemm" / "impls").mkdir(parents=True)
    (include / "deep_gemm" / "impls" / "gemm.cuh").write_text(
        "#pragma once\n#include <deep_gemm/common.cuh>\n#include <cute/tensor.hpp>\n"
        "template <int N> __global__ void gemm() {}\n")
    (include / "deep_gemm" / "common.cuh").write_text("#pragma once\n// common\n")
    source = ("#include <deep_gemm/impls/gemm.cuh>\n  # include <deep_gemm/common.cuh>\n\n"
              "static void __instantiate_kernel() {\n    auto ptr = reinterpret_cast<void*>(&gemm<7168>);\n};\n")
    return include, source
