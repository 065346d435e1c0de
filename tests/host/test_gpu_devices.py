"""The visible GPUs and their free memory, through an nvidia-smi stand-in (tests/fakes/smi)."""

import os

from conftest import FAKES
from tasks.host import gpu

MIB = 1 << 20


def env(**extra):
    base = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "FAKE_GPUS")}
    return {**base, "PATH": f"{FAKES / 'smi'}{os.pathsep}{base.get('PATH', '')}", **extra}


def test_every_gpu_with_its_free_memory():
    assert gpu.devices(env(FAKE_GPUS="100,200,300")) == [gpu.Device("0", 100 * MIB), gpu.Device("1", 200 * MIB),
                                                         gpu.Device("2", 300 * MIB)]


def test_cuda_visible_devices_picks_and_orders_them_as_cuda_does():
    both = env(FAKE_GPUS="100,200,300", CUDA_VISIBLE_DEVICES="2,GPU-fake-0")
    assert gpu.devices(both) == [gpu.Device("2", 300 * MIB), gpu.Device("GPU-fake-0", 100 * MIB)]
    # CUDA stops at the first entry that names no GPU; an empty value hides them all.
    assert gpu.devices(env(FAKE_GPUS="100,200", CUDA_VISIBLE_DEVICES="1,7,0")) == [gpu.Device("1", 200 * MIB)]
    assert gpu.devices(env(FAKE_GPUS="100,200", CUDA_VISIBLE_DEVICES="")) == []


def test_no_nvidia_smi_or_an_unreadable_answer_means_unknown():
    assert gpu.devices({"PATH": "/nonexistent"}) == []
    assert gpu.devices(env(FAKE_GPUS="lots")) == []
