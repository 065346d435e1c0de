"""Installed packages read without importing them (tasks/host/packages.py)."""

from tasks.host import packages


def test_versions_come_from_metadata_and_are_absent_when_not_installed():
    assert packages.dist_version("msgspec") == "0.22.0"
    assert packages.dist_version("no-such-distribution") is None
    assert packages.versions()["sglang"] is None  # never installed into the project's environment


def test_the_layout_follows_the_installed_tree(tmp_path, monkeypatch):
    (tmp_path / "with_jit" / "include" / "deep_jit").mkdir(parents=True)
    (tmp_path / "with_jit" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (tmp_path / "plain.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert packages.deep_gemm_layout_id("with_jit") == "0.2.x"
    assert packages.deep_gemm_layout_id("plain") == "0.1.x"
    assert packages.package_dir("plain") == tmp_path / "plain.py"
