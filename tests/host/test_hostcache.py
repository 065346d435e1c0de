"""Kept answers of slow tools: used while the tool and the GPU stay the same, asked again otherwise."""

import os
import stat

from tasks.host import fingerprint, gpu, hostcache
from tasks.state import layouts


def counting_tool(path, output, calls):
    """A tool that prints `output` and appends a line to `calls` each time it runs."""
    path.write_text(f"#!/bin/sh\necho run >> '{calls}'\ncat <<'EOF'\n{output}\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def runs(calls) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def nvcc_env(tmp_path, nvcc):
    return {"PATH": "/usr/bin:/bin", "DG_JIT_NVCC_COMPILER": str(nvcc), "JITWARM_HOST_CACHE": str(tmp_path / "kept")}


def test_nvcc_is_asked_once_until_the_binary_changes(tmp_path):
    calls = tmp_path / "calls"
    nvcc = counting_tool(tmp_path / "nvcc", "Cuda compilation tools, release 13.0, V13.0.88", calls)
    env, layout = nvcc_env(tmp_path, nvcc), layouts.by_id("0.1.x")
    assert fingerprint.compute(layout, env)["nvcc"] == "13.0.88"
    assert fingerprint.compute(layout, env)["nvcc"] == "13.0.88"
    assert runs(calls) == 1
    counting_tool(tmp_path / "nvcc.new", "Cuda compilation tools, release 13.1, V13.1.20", calls)
    os.replace(tmp_path / "nvcc.new", nvcc)  # an upgrade: another file at the same path
    assert fingerprint.compute(layout, env)["nvcc"] == "13.1.20"
    assert runs(calls) == 2


def test_off_asks_every_time_and_a_broken_file_is_a_miss(tmp_path):
    calls = tmp_path / "calls"
    nvcc = counting_tool(tmp_path / "nvcc", "Cuda compilation tools, release 13.0, V13.0.88", calls)
    layout = layouts.by_id("0.1.x")
    off = {**nvcc_env(tmp_path, nvcc), hostcache.ENV: "off"}
    fingerprint.compute(layout, off)
    fingerprint.compute(layout, off)
    assert runs(calls) == 2
    env = nvcc_env(tmp_path, nvcc)
    fingerprint.compute(layout, env)
    (tmp_path / "kept" / "nvcc.json").write_text("{not json")
    assert fingerprint.compute(layout, env)["nvcc"] == "13.0.88"
    assert runs(calls) == 4


def test_gpu_memory_is_kept_per_visible_gpus(tmp_path):
    calls = tmp_path / "calls"
    (tmp_path / "bin").mkdir()
    counting_tool(tmp_path / "bin" / "nvidia-smi", "143771", calls)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin", "JITWARM_HOST_CACHE": str(tmp_path / "kept")}
    assert gpu.total_mib(env) == 143771 and gpu.total_mib(env) == 143771
    assert runs(calls) == 1
    assert gpu.total_mib({**env, "CUDA_VISIBLE_DEVICES": "1"}) == 143771
    assert runs(calls) == 2  # other GPUs visible: asked again


def test_no_gpu_answer_is_kept_without_nvidia_smi(tmp_path):
    assert hostcache.gpu_key({"PATH": str(tmp_path)}) is None
    assert hostcache.tool_key(str(tmp_path / "missing")) is None
