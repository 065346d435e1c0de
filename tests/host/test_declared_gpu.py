"""The GPU a host without one declares (JITWARM_GPU), and what nvidia-smi reports."""

import os

import pytest

from tasks.host import fingerprint, gpu

from test_fingerprint import compute, fake_tool


def test_presets_and_the_arch_sm_form():
    assert gpu.declared({"JITWARM_GPU": "h200"}) == gpu.PRESETS["H200"]
    assert (gpu.PRESETS["H200"].arch, gpu.PRESETS["H200"].sms) == ("9.0", "132")
    custom = gpu.declared({"JITWARM_GPU": "sm90:132"})
    assert (custom.arch, custom.sms, custom.name, custom.memory_mib) == ("9.0", "132", None, None)
    assert gpu.declared({"JITWARM_GPU": "sm_100:148"}).arch == "10.0"
    assert gpu.declared({}) is None and gpu.declared({"JITWARM_GPU": " "}) is None


@pytest.mark.parametrize("value", ["A100", "sm90", "90:132", "sm90:0", "sm90:x"])
def test_a_value_that_names_no_gpu_is_one_line(value):
    with pytest.raises(gpu.DeclaredGpuError) as info:
        gpu.declared({"JITWARM_GPU": value})
    assert str(info.value) == f"JITWARM_GPU: expected H100, H200 or smXY:SMS (e.g. sm90:132), got {value!r}"


def test_memory_comes_from_nvidia_smi_else_a_declared_preset(tmp_path):
    bare = {"PATH": f"{tmp_path}{os.pathsep}/usr/bin:/bin"}
    assert gpu.total_mib(bare) is None
    assert gpu.total_mib({**bare, "JITWARM_GPU": "H200"}) == 143771
    assert gpu.total_mib({**bare, "JITWARM_GPU": "sm90:132"}) is None
    fake_tool(tmp_path, "nvidia-smi", "81559")
    assert gpu.total_mib({**bare, "JITWARM_GPU": "H200"}) == 81559  # a GPU that is there wins


def test_a_declared_gpu_fills_the_fingerprint_only_where_none_is_visible(tmp_path):
    bare = {"PATH": f"{tmp_path}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_HOME": str(tmp_path)}
    fp = compute({**bare, "JITWARM_GPU": "H200"})
    assert (fp["gpu.name"], fp["gpu.arch"], fp["gpu.sms"], fp["gpu.declared"]) == ("NVIDIA H200", "9.0", "132", "H200")
    # On the H200 itself the same software fingerprints the same: the declaration is not compared.
    on_the_gpu = {k: v for k, v in fp.items() if k != "gpu.declared"}
    assert fingerprint.diff(fp, on_the_gpu) == []
    assert fingerprint.diff(fp, {**on_the_gpu, "gpu.name": "NVIDIA H100 80GB HBM3"}) == []  # same arch and SMs
    assert fingerprint.diff(fp, {**on_the_gpu, "gpu.sms": "114"}) == ["gpu.sms 132 -> 114"]
    fake_tool(tmp_path, "nvidia-smi", "NVIDIA B200, 10.0, 580.159.04")
    seen = compute({**bare, "JITWARM_GPU": "H200"})
    assert (seen["gpu.arch"], seen.get("gpu.declared")) == ("10.0", None)  # a GPU that is there wins
