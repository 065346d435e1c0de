"""The README's first screen is enough for a newcomer: the install and test commands CI
runs, and a warm on a CPU through the stand-ins that works exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

FIRST_SCREEN = 70  # lines


def first_screen() -> str:
    return "".join((REPO / "README.md").read_text().splitlines(keepends=True)[:FIRST_SCREEN])


def blocks(text: str) -> list[list[str]]:
    return [b.strip().splitlines() for b in re.findall(r"^```\n(.*?)^```", text, re.S | re.M)]


def test_the_first_screen_holds_the_commands_ci_runs():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install = next(line for line in ci if "pip install" in line)
    tests = ci[ci.index(install) + 1:]
    assert tests == ["lint-imports", "python -m pytest"]
    assert any(install in block and all(t in block for t in tests) for block in blocks(first_screen()))


def test_the_cpu_try_runs_as_written(tmp_path):
    (try_block,) = [b for b in blocks(first_screen()) if b and b[0].startswith(". tools/stand-ins.sh")]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SGLANG_", "SGL_", "DG_JIT_", "DJ_JIT_", "FAKE_DG_", "JITWARM_", "GITHUB_", "PYTHON"))}
    env.update(TMPDIR=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = "set -e\n" + "\n".join(try_block) + "\n"
    out = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout and "Traceback" not in out.stderr
    listed = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines() if line[:2] in ("U ", "R ")}
    warmed = [name for name in listed if name.startswith("warm:deepseek")]
    assert warmed and all(listed[name] == "U" for name in warmed), out.stdout
    assert any((tmp_path / "jitwarm-stand-ins" / "cache" / "cache").iterdir())  # nothing written in the repo


def test_every_relative_link_in_the_docs_resolves():
    for page in [REPO / "README.md", REPO / "bench" / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)}: {target}"
