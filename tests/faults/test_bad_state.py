"""State that is valid JSON with the wrong field types counts as
stale and repairs itself; a missing, misspelt or empty registry is an error, not
"0 of 0 targets stale" with exit 0."""

from __future__ import annotations

import json

import pytest

from conftest import model_file


def warm_v3(ws) -> None:
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    assert ws.doit("warm").returncode == 0


@pytest.mark.parametrize("kind, field, value", [
    ("markers", "tp", "eight"),
    ("markers", "entries", {"kernel.x": 5}),
    ("markers", "shapes", [{"kind": 1}]),
    ("markers", "fingerprint", {"torch": [1]}),
    ("shapes", "ok", "yes"),
    ("shapes", "entries", "kernel.x"),
    ("shapes", "replay", {"calls": "many"}),
])
def test_state_with_wrong_field_types_is_stale_and_the_next_warm_repairs_it(ws, template, kind, field, value):
    ws = ws.copy_of(template(ws.layout, "v3-tp8-m2", warm_v3))
    if kind == "shapes":  # records are read when the target is stale
        for marker in (ws.root / "jitwarm" / "markers").glob("*.json"):
            marker.unlink()
    victim = sorted((ws.root / "jitwarm" / kind).glob("*.json"))[0]
    data = json.loads(victim.read_text())
    data[field] = value
    victim.write_text(json.dumps(data))
    assert set(ws.status().values()) == {"R"}
    out = ws.doit("warm")
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert set(ws.status().values()) == {"U"}
    assert json.loads(victim.read_text())[field] != value


@pytest.mark.parametrize("case", ["missing", "empty", "a file"])
def test_a_missing_or_empty_registry_is_an_error_in_one_line(ws, case):
    models = ws.tmp / "modles"  # a typo
    if case == "empty":
        models.mkdir()
        (models / "notes.txt").write_text("no models here")
    elif case == "a file":
        models.write_text("")
    why = {"missing": "does not exist", "empty": "holds no model files (*.toml)", "a file": "is not a directory"}[case]
    for command in (["warm"], ["list", "--status"]):
        out = ws.doit(*command, JITWARM_MODELS_DIR=str(models))
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert out.stderr.strip() == f"jitwarm: registry {models} (JITWARM_MODELS_DIR or [tool.jitwarm] models_dir) {why}"
