import os
import stat

from tasks import fingerprint


def fake_tool(directory, name, output):
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_missing_tools_are_recorded_absent(tmp_path):
    fp = fingerprint.compute({"PATH": str(tmp_path), "HOME": str(tmp_path), "CUDA_HOME": str(tmp_path)})
    assert fp["nvcc"] is None and fp["gpu.arch"] is None and fp["gpu.sms"] is None
    assert fp["python"] and fp["deep_gemm.module"] == "deep_gemm"
    assert all(fp[f"env.{name}"] is None for name in fingerprint.KERNEL_ENV)


def test_reads_nvcc_and_nvidia_smi(tmp_path):
    (tmp_path / "bin").mkdir()
    fake_tool(tmp_path / "bin", "nvcc", "Cuda compilation tools, release 13.0, V13.0.88")
    fake_tool(tmp_path / "bin", "nvidia-smi", "NVIDIA H100 80GB HBM3, 9.0, 580.159.04")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "CUDA_HOME": str(tmp_path),
           "DG_JIT_CPP_STANDARD": "17"}
    fp = fingerprint.compute(env)
    assert fp["nvcc"] == "13.0.88"
    assert (fp["gpu.name"], fp["gpu.arch"]) == ("NVIDIA H100 80GB HBM3", "9.0")
    assert fp["env.DG_JIT_CPP_STANDARD"] == "17"


def test_dg_jit_nvcc_compiler_wins_over_cuda_home(tmp_path):
    nvcc = fake_tool(tmp_path, "my-nvcc", "Cuda compilation tools, release 12.9, V12.9.41")
    fp = fingerprint.compute({"PATH": "/usr/bin:/bin", "CUDA_HOME": "/nonexistent", "DG_JIT_NVCC_COMPILER": str(nvcc)})
    assert fp["nvcc"] == "12.9.41"


def test_diff_names_each_change():
    old = {"torch": "2.11.0", "nvcc": "13.0.88", "env.DG_JIT_CPP_STANDARD": None}
    new = {"torch": "2.14.1", "nvcc": "13.0.88", "env.DG_JIT_CPP_STANDARD": "17"}
    assert fingerprint.diff(old, new) == ["env.DG_JIT_CPP_STANDARD absent -> 17", "torch 2.11.0 -> 2.14.1"]
    assert fingerprint.diff(new, dict(new)) == []


def test_stand_in_module_is_recorded(monkeypatch):
    fp = fingerprint.compute({"JITWARM_DEEP_GEMM_MODULE": "json", "PATH": ""})
    assert fp["deep_gemm.module"] == "json" and fp["deep_gemm.dist"] is None
    assert fp["deep_gemm.path"].endswith("json")
