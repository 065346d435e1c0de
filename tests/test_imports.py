"""Planning stays torch-free: loading dodo.py and listing must not import torch or deep_gemm."""

import subprocess
import sys

from conftest import DODO, REPO

PROBE = f"""
import runpy, sys
ns = runpy.run_path({str(DODO)!r})
list(ns["task_warm"]()); list(ns["task__shape"]())
from tasks.cli import doit_tasks; doit_tasks.load()[0].fingerprint
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


def test_a_configured_remote_costs_planning_no_storage_imports(tmp_path):
    """fsspec, its backends and zstd load only when a stale shape asks the remote."""
    probe = PROBE.replace('("torch", "deep_gemm", "triton", "sglang")',
                          '("fsspec", "s3fs", "botocore", "aiobotocore", "zstandard", "tarfile")')
    probe = probe.replace("print(bad)", "print(bad, ns['DOIT_CONFIG'] is not None)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "JITWARM_REMOTE": "s3://bucket/jitwarm", "JITWARM_REMOTE_MODE": "read-write"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] True"
