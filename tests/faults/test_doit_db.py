"""doit's own database. The JSON one was truncated and rewritten in place, so concurrent
warms sharing it failed now and then ("Invalid JSON data in doit.db") and a SIGKILL while it was
saved left it empty, after which every command failed. It is SQLite now (transactional), and one
that cannot be read is moved aside in one line: jitwarm's markers are the truth."""

from __future__ import annotations

import json

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


def warm_v3(ws) -> None:
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    assert ws.doit("warm").returncode == 0


@pytest.mark.parametrize("content", [b"\0" * 4096, b"SQLite format 3\0" + b"\xff" * 200,
                                     json.dumps({"warm": {"result:": "x"}}).encode()])
@pytest.mark.one_layout  # the database holds no cache entries: the layout cannot change it
def test_a_damaged_or_old_json_database_is_moved_aside_in_one_line(ws, template, content):
    ws = ws.copy_of(template(ws.layout, "v3-tp8-m2", warm_v3))
    db = ws.tmp / "doit.db"
    db.write_bytes(content)
    out = ws.doit("warm")
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "jitwarm: doit's database " in out.stdout and " 0 rebuilt" in out.stdout
    assert set(ws.status().values()) == {"U"}
    assert (ws.tmp / "doit.db.unreadable").read_bytes() == content


@pytest.mark.one_layout  # the database holds no cache entries: the layout cannot change it
def test_four_concurrent_warms_share_the_database_round_after_round(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    model_file(ws.models, "v3b", "[[launch]]\ntp = 4\nm_list = [1, 32]\n")
    for _ in range(2):
        codes, outputs = ws.concurrent_warms(4)
        assert codes == [0, 0, 0, 0], outputs
        assert not any("database" in out.lower() and "error" in out.lower() for out in outputs), outputs
