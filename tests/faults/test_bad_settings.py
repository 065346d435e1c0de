"""Bad input that printed a traceback or misled now gives one line and exit 1 (a bad
setting, as the README says), before anything runs; the registry refuses what sglang could never run."""

from __future__ import annotations

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


@pytest.mark.parametrize("setting, says", [
    (lambda ws: {"DG_JIT_CACHE_DIR": str(_file(ws))}, "is not a directory"),
    (lambda ws: {"DG_JIT_CACHE_DIR": "/dev/null"}, "cache root /dev/null (DG_JIT_CACHE_DIR): /dev/null is not a directory"),
    (lambda ws: {"JITWARM_DOIT_DB": str(ws.tmp)}, "is a directory; name the file doit's database is kept in"),
    (lambda ws: {"JITWARM_GPU_MARGIN_GIB": "lots"}, "JITWARM_GPU_MARGIN_GIB: expected a non-negative number, got 'lots'"),
    (lambda ws: {"JITWARM_KILL_GRACE_S": "soon"}, "JITWARM_KILL_GRACE_S: expected a non-negative number, got 'soon'"),
    (lambda ws: {"JITWARM_SHARD": "1/10000000"}, "expected i/N with 1 <= i <= N <= 4096"),
])
@pytest.mark.one_layout  # settings are read before any cache layout matters
def test_a_bad_setting_is_one_line_and_exit_1(ws, setting, says):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    out = ws.doit("warm", **setting(ws))  # `doit list` reads them through the same load()
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    assert says in text


def _file(ws):
    path = ws.tmp / "a-file"
    path.write_text("not a directory")
    return path


def test_a_compiler_that_does_not_run_fails_every_target_in_one_line_before_the_pool(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    out = ws.doit("warm", DG_JIT_NVCC_COMPILER=str(ws.tmp / "no-such-nvcc"))
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    assert f"DG_JIT_NVCC_COMPILER={ws.tmp / 'no-such-nvcc'} does not run as nvcc" in text
    assert not ws.compile_log.exists()


@pytest.mark.one_layout
@pytest.mark.parametrize("body, says", [
    ("m_list = [" + ", ".join(["1"] * 140000) + "]\n", "a list of at most 131072 integers"),
    ("m_list = [1, 2097152]\n", "integers from 1 to 1048576"),
])
def test_the_registry_refuses_what_sglang_could_never_run(ws, body, says):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\n" + body)
    out = ws.doit("list", "--all")
    assert out.returncode == 0 and says in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.one_layout
def test_a_huge_model_file_is_refused_before_it_is_parsed(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\n# " + "x" * (1 << 20) + "\n")
    out = ws.doit("list", "--all")
    assert "file is " in out.stdout and "a model file is at most 1048576" in out.stdout, out.stdout + out.stderr
