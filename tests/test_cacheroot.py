from tasks import cacheroot


def test_sglang_dg_cache_dir_wins(tmp_path):
    root = cacheroot.resolve({"SGLANG_DG_CACHE_DIR": str(tmp_path / "a"), "DG_JIT_CACHE_DIR": "/b"})
    assert root.path == tmp_path / "a" and root.source == "SGLANG_DG_CACHE_DIR"


def test_without_sglang_dg_jit_cache_dir_first_component(tmp_path):
    root = cacheroot.resolve({"DG_JIT_CACHE_DIR": f"{tmp_path}/w:/ro1:/ro2"})
    assert root.path == tmp_path / "w" and "DG_JIT_CACHE_DIR" in root.source


def test_default_is_sglang_ci_location(tmp_path):
    root = cacheroot.resolve({"HOME": str(tmp_path)})
    assert root.path == tmp_path / ".cache" / "deep_gemm"
    assert str(tmp_path) in str(root)


def test_reads_installed_sglang_default_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "sglang" / "srt"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "environ.py").write_text(
        'SGLANG_DG_CACHE_DIR = EnvStr(lambda: _default_cache_subdir("deep_gemm"))\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    root = cacheroot.resolve({"HOME": str(tmp_path), "DG_JIT_CACHE_DIR": "/ignored"})
    assert root.path == tmp_path / ".cache" / "sglang" / "deep_gemm"
    assert "DG_JIT_CACHE_DIR is ignored" in root.source
    moved = cacheroot.resolve({"HOME": str(tmp_path), "SGLANG_CACHE_DIR": str(tmp_path / "sg")})
    assert moved.path == tmp_path / "sg" / "deep_gemm"
