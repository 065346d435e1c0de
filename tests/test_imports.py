"""Planning stays torch-free: loading dodo.py and listing must not import torch or deep_gemm."""

import subprocess
import sys

from conftest import DODO, REPO

PROBE = f"""
import runpy, sys
ns = runpy.run_path({str(DODO)!r})
list(ns["task_warm"]()); list(ns["task__shape"]())
from tasks import fingerprint; fingerprint.current()
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "deep_gemm", "triton", "sglang"))
print(bad)
"""


def test_dodo_imports_neither_torch_nor_deep_gemm(tmp_path):
    # Poison both names: importing either would raise and fail the probe.
    for name in ("torch", "deep_gemm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise RuntimeError('imported during planning')\n")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
