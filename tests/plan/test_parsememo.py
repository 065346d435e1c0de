"""The parse memo (tasks/plan/parsememo.py): unchanged model files skip TOML, everything
else is parsed as registry.load would."""

from __future__ import annotations

import shutil

import pytest

from conftest import REPO
from tasks.plan import parsememo, registry

pytestmark = pytest.mark.one_layout


@pytest.fixture
def models(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("deepseek-v3-0324", "glm-5-fp8", "mimo-v2-flash"):
        shutil.copy(REPO / "models" / f"{name}.toml", models)
    (tmp_path / "state").mkdir()
    return models


def no_toml(monkeypatch):
    def refuse(*_):
        raise AssertionError("a file was parsed again")
    monkeypatch.setattr(registry.tomllib, "loads", refuse)


def test_unchanged_files_come_from_the_memo_equal_to_a_fresh_parse(models, tmp_path, monkeypatch):
    memo = tmp_path / "state" / "registry.msgpack"
    first = parsememo.load(models, memo)
    assert first == registry.load(models) and memo.is_file()
    no_toml(monkeypatch)
    assert parsememo.load(models, memo) == first


def test_an_edited_file_is_parsed_again_and_the_memo_follows(models, tmp_path, monkeypatch):
    memo = tmp_path / "state" / "registry.msgpack"
    parsememo.load(models, memo)
    path = models / "glm-5-fp8.toml"
    path.write_text(path.read_text() + '\n[[launch]]\ntp = 4\n')
    edited = {s.name: s for s in parsememo.load(models, memo)}["glm-5-fp8"]
    assert [launch.tp for launch in edited.launches][-1] == 4
    no_toml(monkeypatch)
    assert {s.name: s for s in parsememo.load(models, memo)}["glm-5-fp8"] == edited


def test_an_invalid_file_is_never_kept_and_its_error_stays_current(models, tmp_path):
    memo = tmp_path / "state" / "registry.msgpack"
    bad = models / "bad.toml"
    bad.write_text('hf_id = "org/m"\n[[launch]]\ntp = 0\n')
    assert "launch[0].tp: expected a positive integer, got 0" in parsememo.load(models, memo)[0].message
    bad.write_text('hf_id = "org/m"\n[[launch]]\ntp = -1\n')
    assert "got -1" in parsememo.load(models, memo)[0].message


def test_a_damaged_or_other_versions_memo_is_ignored(models, tmp_path, monkeypatch):
    memo = tmp_path / "state" / "registry.msgpack"
    expected = registry.load(models)
    memo.write_bytes(b"\x93not a memo")
    assert parsememo.load(models, memo) == expected
    monkeypatch.setattr(parsememo, "_code_digest", lambda: "another jitwarm")
    parsed = []
    real = registry.tomllib.loads
    monkeypatch.setattr(registry.tomllib, "loads", lambda text: parsed.append(1) or real(text))
    assert parsememo.load(models, memo) == expected and len(parsed) == 3


def test_without_a_state_dir_nothing_is_created(models, tmp_path):
    memo = tmp_path / "no-root" / "jitwarm" / "registry.msgpack"
    assert parsememo.load(models, memo) == registry.load(models)
    assert not (tmp_path / "no-root").exists()
