"""doit's own `info` and `forget` as jitwarm registers them (tasks/cli/doit_overrides.py): one line
for a name that is no task, and a forgotten target is stale until the next warm proves it again."""

from __future__ import annotations

import pytest

from conftest import model_file, plain_doit

pytestmark = pytest.mark.both_layouts


def warm_two(ws) -> None:
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n[[launch]]\ntp = 4\nm_list = [1, 32]\n")
    assert ws.doit("warm").returncode == 0


@pytest.mark.one_layout  # a name is checked before any cache entry is read
@pytest.mark.parametrize("command", ["info", "forget"])
def test_a_name_that_is_no_task_is_one_line_and_exit_3(ws, command):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    out = plain_doit(ws, command, "warm:v3@tp8-typo")
    assert out.returncode == 3 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "unknown task 'warm:v3@tp8-typo'; `doit list` shows the targets" in out.stderr


def test_forget_makes_a_target_stale_and_the_next_warm_proves_it_without_recompiling(ws, template):
    ws = ws.copy_of(template(ws.layout, "v3-two-launches", warm_two))
    status = ws.status()
    victim, other = sorted(status)
    out = plain_doit(ws, "forget", victim)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ws.status() == {victim: "R", other: "U"}
    compiles = ws.compile_log.read_text() if ws.compile_log.exists() else ""
    again = ws.doit("warm")
    assert again.returncode == 0 and " 1 rebuilt" in again.stdout, again.stdout
    assert (ws.compile_log.read_text() if ws.compile_log.exists() else "") == compiles  # proven, not rebuilt
    assert set(ws.status().values()) == {"U"}
