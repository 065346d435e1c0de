"""Every test file under tests/ is collected by the configured pytest.

pytest's default `norecursedirs` skips folders named build, dist, venv, CVS, node_modules, *.egg and
dot-folders; a rename once hid 28 tests from CI that way (tests/build/). Compare what a bare `pytest`
in a root collects with the test files on disk there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

# pytest's default `python_files`; pyproject.toml does not change it.
TEST_FILE_GLOBS = ("test_*.py", "*_test.py")


def files_on_disk(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for glob in TEST_FILE_GLOBS for path in (root / "tests").rglob(glob)
            if "__pycache__" not in path.parts}


def collected_files(root: Path) -> set[str]:
    """Files with at least one test that `pytest` in `root` collects, with the root's own configuration."""
    # -n 0 keeps the configured addopts (and so any collection option in them) but collects in-process.
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
                          "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}


def uncollected(root: Path) -> set[str]:
    return files_on_disk(root) - collected_files(root)


def test_every_test_file_in_the_repo_is_collected():
    on_disk = files_on_disk(REPO)
    assert {"tests/runner/test_pool.py", "tests/e2e/test_warm.py", "tests/test_collection.py"} <= on_disk
    assert uncollected(REPO) == set()


def test_a_test_file_in_a_folder_pytest_skips_is_reported(tmp_path):
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    for folder in ("plan", "build", "dist", "venv"):
        (tmp_path / "tests" / folder).mkdir(parents=True)
        (tmp_path / "tests" / folder / f"test_in_{folder}.py").write_text("def test_one():\n    assert 1\n")
    (tmp_path / "tests" / "conftest.py").write_text("")
    assert uncollected(tmp_path) == {"tests/build/test_in_build.py", "tests/dist/test_in_dist.py",
                                     "tests/venv/test_in_venv.py"}
