import os
import stat

import pytest

from tasks.host import fingerprint
from tasks.remote import store as remote
from tasks.state import layouts

NVCC_13 = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\nBuild {build}"


def compute(env: dict) -> dict:
    """The fingerprint under the layout this environment's deep_gemm has, as a warm computes it."""
    return fingerprint.compute(layouts.detect(fingerprint.deep_gemm_module(env), env), env)


def fake_tool(directory, name, output):
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_missing_tools_are_recorded_absent(tmp_path):
    fp = compute({"PATH": str(tmp_path), "HOME": str(tmp_path), "CUDA_HOME": str(tmp_path)})
    assert fp["nvcc"] is None and fp["gpu.arch"] is None and fp["gpu.sms"] is None
    assert fp["python"] and fp["deep_gemm.module"] == "deep_gemm"
    assert all(fp[f"env.{name}"] is None for name in fingerprint.kernel_env(layouts.by_id("0.1.x")))


def test_reads_nvcc_and_nvidia_smi(tmp_path):
    (tmp_path / "bin").mkdir()
    fake_tool(tmp_path / "bin", "nvcc", "Cuda compilation tools, release 13.0, V13.0.88")
    fake_tool(tmp_path / "bin", "nvidia-smi", "NVIDIA H100 80GB HBM3, 9.0, 580.159.04")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "CUDA_HOME": str(tmp_path),
           "DG_JIT_CPP_STANDARD": "17"}
    fp = compute(env)
    assert fp["nvcc"] == "13.0.88"
    assert (fp["gpu.name"], fp["gpu.arch"]) == ("NVIDIA H100 80GB HBM3", "9.0")
    assert fp["env.DG_JIT_CPP_STANDARD"] == "17"


def test_dg_jit_nvcc_compiler_wins_over_cuda_home(tmp_path):
    nvcc = fake_tool(tmp_path, "my-nvcc", "Cuda compilation tools, release 12.9, V12.9.41")
    fp = compute({"PATH": "/usr/bin:/bin", "CUDA_HOME": "/nonexistent", "DG_JIT_NVCC_COMPILER": str(nvcc)})
    assert fp["nvcc"] == "12.9.41"


def test_diff_names_each_change():
    old = {"torch": "2.11.0", "nvcc": "13.0.88", "env.DG_JIT_CPP_STANDARD": None}
    new = {"torch": "2.14.1", "nvcc": "13.0.88", "env.DG_JIT_CPP_STANDARD": "17"}
    assert fingerprint.diff(old, new) == ["env.DG_JIT_CPP_STANDARD absent -> 17", "torch 2.11.0 -> 2.14.1"]
    assert fingerprint.diff(new, dict(new)) == []


def test_stand_in_module_is_recorded(monkeypatch):
    fp = compute({"JITWARM_DEEP_GEMM_MODULE": "json", "PATH": ""})
    assert fp["deep_gemm.module"] == "json" and fp["deep_gemm.dist"] is None
    assert fp["deep_gemm.path"].endswith("json")


def test_deepjit_keys_the_whole_nvcc_text_and_its_own_env_not_the_install_path(tmp_path):
    """0.2.x hashes `nvcc --version` whole, reads DG_ or DJ_ spellings, has no NVRTC (DeepJIT's utils/env.hpp and compiler.hpp)."""
    nvcc = fake_tool(tmp_path, "nvcc", NVCC_13.format(build="cuda_13.0.r13.0/compiler.1"))
    env = {"PATH": "/usr/bin:/bin", "JITWARM_CACHE_LAYOUT": "0.2.x", "JITWARM_DEEP_GEMM_MODULE": "json",
           "DJ_JIT_NVCC_COMPILER": str(nvcc), "DJ_JIT_CHECK_NO_SPILLS": "1", "SGLANG_DG_USE_NVRTC": "1"}
    fp = compute(env)
    assert fp["deep_gemm.layout"] == "0.2.x" and "deep_gemm.path" not in fp
    assert fp["nvcc"] == "13.0.88" and fp["nvcc.version_sha256"]
    assert fp["env.DJ_JIT_CHECK_NO_SPILLS"] == "1" and fp["env.DJ_JIT_NVCC_COMPILER"] == str(nvcc)
    assert not any("NVRTC" in key for key in fp)
    nvcc.write_text(nvcc.read_text().replace("compiler.1", "compiler.2"))
    rebuilt = compute(env)
    assert fingerprint.diff(fp, rebuilt) == [
        f"nvcc.version_sha256 {fp['nvcc.version_sha256']} -> {rebuilt['nvcc.version_sha256']}"]
    parts = remote.key_parts(fp)
    assert parts["deep_gemm.layout"] == "0.2.x" and "deep_gemm.path" not in parts
    assert parts["nvcc.version_sha256"] == fp["nvcc.version_sha256"] and "env.DJ_JIT_CHECK_NO_SPILLS" in parts
    assert "env.SGLANG_JIT_DEEPGEMM_FAST_WARMUP" not in parts  # warmup, not kernels


def test_legacy_remote_key_keeps_the_install_path_and_nvrtc():
    fp = compute({"PATH": "", "JITWARM_DEEP_GEMM_MODULE": "json", "SGL_DG_USE_NVRTC": "1"})
    parts = remote.key_parts(fp)
    assert parts["deep_gemm.layout"] == "0.1.x" and parts["deep_gemm.path"].endswith("json")
    assert parts["env.SGL_DG_USE_NVRTC"] == "1" and "nvcc.version_sha256" not in parts


def test_layout_is_read_from_the_installed_package_without_importing_it(tmp_path, monkeypatch):
    for name, deep_jit in (("dg_new", True), ("dg_old", False)):
        pkg = tmp_path / name
        (pkg / "include" / ("deep_jit" if deep_jit else "deep_gemm")).mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert layouts.detect("dg_new", {}).id == "0.2.x"
    assert layouts.detect("dg_old", {}).id == "0.1.x"
    assert layouts.detect("dg_new", {"JITWARM_CACHE_LAYOUT": "0.1.x"}).id == "0.1.x"
    with pytest.raises(layouts.LayoutError, match="JITWARM_CACHE_LAYOUT: expected one of 0.1.x, 0.2.x, got '2'"):
        layouts.detect("dg_new", {"JITWARM_CACHE_LAYOUT": "2"})
