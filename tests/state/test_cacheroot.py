"""Cache roots resolved as the server will (tasks/state/cacheroot.py), for both layouts."""

import pytest

from tasks.state import cacheroot, layouts

LEGACY, DEEPJIT = layouts.by_id("0.1.x"), layouts.by_id("0.2.x")


def test_sglang_dg_cache_dir_wins(tmp_path):
    root = cacheroot.resolve(LEGACY, {"SGLANG_DG_CACHE_DIR": str(tmp_path / "a"), "DG_JIT_CACHE_DIR": "/b"})
    assert root.path == tmp_path / "a" and root.source == "SGLANG_DG_CACHE_DIR"


def test_legacy_sgl_spelling_overrides_sglang_as_sglang_rewrites_it(tmp_path):
    env = {"SGL_DG_CACHE_DIR": str(tmp_path / "legacy"), "SGLANG_DG_CACHE_DIR": str(tmp_path / "new")}
    root = cacheroot.resolve(DEEPJIT, env)
    assert root.path == tmp_path / "legacy" and root.source == "SGL_DG_CACHE_DIR"


def test_sglang_dg_cache_dir_is_a_root_list_for_deepjit(tmp_path):
    env = {"SGLANG_DG_CACHE_DIR": f"{tmp_path}/w:{tmp_path}/ro1:{tmp_path}/ro2"}
    root = cacheroot.resolve(DEEPJIT, env)
    assert root.path == tmp_path / "w" and root.readonly == (tmp_path / "ro1", tmp_path / "ro2")
    assert root.env_value() == f"{tmp_path}/w:{tmp_path}/ro1:{tmp_path}/ro2"
    assert root.lines() == [f"{tmp_path}/w (writable; SGLANG_DG_CACHE_DIR)", f"{tmp_path}/ro1 (read-only)",
                            f"{tmp_path}/ro2 (read-only)"]
    assert cacheroot.CacheRoot.from_plan(root.as_plan()).roots == root.roots


@pytest.mark.parametrize("name", ["DG_JIT_CACHE_DIR", "DJ_JIT_CACHE_DIR"])
def test_without_sglang_deepjit_reads_its_own_variables_as_lists(tmp_path, name):
    root = cacheroot.resolve(DEEPJIT, {name: f"{tmp_path}/w:{tmp_path}/ro"})
    assert root.path == tmp_path / "w" and root.readonly == (tmp_path / "ro",)
    assert name in root.source


def test_dg_spelling_wins_over_dj(tmp_path):
    root = cacheroot.resolve(DEEPJIT, {"DG_JIT_CACHE_DIR": str(tmp_path / "dg"), "DJ_JIT_CACHE_DIR": "/dj"})
    assert root.path == tmp_path / "dg"


def test_legacy_takes_dg_jit_cache_dir_literally_and_ignores_dj(tmp_path):
    root = cacheroot.resolve(LEGACY, {"DG_JIT_CACHE_DIR": f"{tmp_path}/a:b", "HOME": str(tmp_path)})
    assert root.path == tmp_path / "a:b" and root.readonly == ()
    only_dj = cacheroot.resolve(LEGACY, {"DJ_JIT_CACHE_DIR": "/dj", "HOME": str(tmp_path)})
    assert only_dj.path == tmp_path / ".cache" / "deep_gemm"


def test_an_empty_item_in_a_root_list_is_one_line_naming_the_variable(tmp_path):
    with pytest.raises(layouts.LayoutError, match=r"^SGLANG_DG_CACHE_DIR: empty path in the list '/a::/b'"):
        cacheroot.resolve(DEEPJIT, {"SGLANG_DG_CACHE_DIR": "/a::/b"})


def test_defaults_without_sglang(tmp_path):
    legacy = cacheroot.resolve(LEGACY, {"HOME": str(tmp_path)})
    assert legacy.path == tmp_path / ".cache" / "deep_gemm"
    assert str(tmp_path) in str(legacy)
    deepjit = cacheroot.resolve(DEEPJIT, {"HOME": str(tmp_path), "SGL_CACHE_DIR": str(tmp_path / "sg")})
    assert deepjit.path == tmp_path / "sg" / "deep_gemm" and "sglang 0.5.23" in deepjit.source


def test_reads_installed_sglang_default_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "sglang" / "srt"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "environ.py").write_text(
        'SGLANG_DG_CACHE_DIR = EnvStr(lambda: _default_cache_subdir("deep_gemm"))\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    root = cacheroot.resolve(DEEPJIT, {"HOME": str(tmp_path), "DG_JIT_CACHE_DIR": "/ignored:/x"})
    assert root.path == tmp_path / ".cache" / "sglang" / "deep_gemm" and root.readonly == ()
    assert "DG_JIT_CACHE_DIR ignored" in root.source
    moved = cacheroot.resolve(DEEPJIT, {"HOME": str(tmp_path), "SGLANG_CACHE_DIR": str(tmp_path / "sg")})
    assert moved.path == tmp_path / "sg" / "deep_gemm"
