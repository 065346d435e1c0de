"""Shared helpers: run doit on dodo.py against a temporary registry and cache root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "fakes"
DODO = REPO / "dodo.py"

V3_CONFIG = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]


def model_file(directory: Path, name: str, launches: str, header: str = V3_CONFIG) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(header + "\n" + launches)
    return path


class Workspace:
    """A registry dir, a cache root and the environment that points doit at them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.models = tmp / "models"
        self.models.mkdir()
        self.root = tmp / "cache"
        self.compile_log = tmp / "compiles.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SGLANG_", "DG_JIT_", "FAKE_DG_", "JITWARM_", "GITHUB_", "NO_COLOR"))}
        self.env.update({
            "JITWARM_MODELS_DIR": str(self.models),
            "DG_JIT_CACHE_DIR": str(self.root),
            "JITWARM_DEEP_GEMM_MODULE": "fake_deep_gemm",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES), str(REPO), os.environ.get("PYTHONPATH")])),
            "FAKE_DG_COMPILE_LOG": str(self.compile_log),
            "JITWARM_DOIT_DB": str(tmp / "doit.db"),
            "JITWARM_KILL_GRACE_S": "1",
            "DG_JIT_NVCC_COMPILER": str(FAKES / "fake_nvcc"),
        })

    def doit(self, *args: str, cwd: Path | None = None, timeout: float = 120, **env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "doit", "-f", str(DODO), *args],
                              cwd=cwd or self.tmp, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=timeout)

    def compiles(self) -> list[str]:
        return self.compile_log.read_text().split() if self.compile_log.exists() else []

    def pool_processes(self) -> list:
        """Live pool processes (tasks/zygote.py) that work on this workspace's cache root."""
        import psutil

        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "tasks.zygote" in (proc.info["cmdline"] or []) and \
                        proc.environ().get("DG_JIT_CACHE_DIR") == str(self.root):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def status(self, **env) -> dict[str, str]:
        """{target: 'U' | 'R'} from `doit list --status`."""
        out = self.doit("list", "--status", "--all", **env)
        assert out.returncode == 0, out.stderr
        rows = [line.split()[:2] for line in out.stdout.splitlines() if line.strip()]
        return {name: flag for flag, name in rows if name.startswith("warm:")}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)
