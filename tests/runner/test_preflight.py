"""Whether a warm can run here (tasks/runner/preflight.py): one line, or None."""

import pytest

from tasks.runner import preflight

REAL = {"deep_gemm.module": "deep_gemm", "deep_gemm.layout": "0.2.x", "gpu.arch": "9.0", "nvcc": "13.0.88"}


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A `deep_gemm` that find_spec sees (never imported)."""
    (tmp_path / "deep_gemm").mkdir()
    (tmp_path / "deep_gemm" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_missing_module_is_one_line():
    line = preflight.problem({**REAL, "deep_gemm.module": "no_such_deep_gemm"})
    assert line.startswith("no_such_deep_gemm is not installed for ") and "\n" not in line


def test_a_stand_in_needs_no_gpu():
    assert preflight.problem({"deep_gemm.module": "json", "gpu.arch": None, "nvcc": None}) is None


def test_the_real_module_needs_a_gpu_and_for_0_2_x_nvcc_12_9_or_newer(installed):
    assert preflight.problem(REAL) is None
    assert preflight.problem({**REAL, "gpu.arch": None}) == "no NVIDIA GPU visible (nvidia-smi reported none)"
    assert "has no NVRTC" in preflight.problem({**REAL, "nvcc": None})
    assert preflight.problem({**REAL, "nvcc": "12.8.93"}) == (
        "nvcc 12.8.93 is too old: sgl-deep-gemm 0.2.x needs nvcc 12.9 or newer")
    assert preflight.problem({**REAL, "nvcc": "12.9.41"}) is None
    assert preflight.problem({**REAL, "deep_gemm.layout": "0.1.x", "nvcc": "12.4.0"}) is None  # 0.1.x: any nvcc
