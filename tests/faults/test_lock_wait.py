"""A concurrent warm that holds a shape longer than shape_timeout_s
fails that shape in one line; the run goes on with its other targets (no traceback)."""

from __future__ import annotations

import filelock

from conftest import model_file
from tasks.plan import registry, targets
from tasks.state import records


def test_a_lock_held_past_the_shape_timeout_fails_that_shape_in_one_line_and_the_rest_warms(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n[[launch]]\ntp = 4\nm_list = [1, 32]\n")
    planned = {t.name.split("@")[1].split("-")[0]: t for t in targets.expand(registry.load(ws.models), environ={})}
    only_tp8 = [w for w in planned["tp8"].works if w.key not in {v.key for v in planned["tp4"].works}]
    assert only_tp8
    held = [filelock.FileLock(str(records.state_dir(ws.root) / "locks" / f"{w.key}.lock")) for w in only_tp8]
    (records.state_dir(ws.root) / "locks").mkdir(parents=True, exist_ok=True)
    for lock in held:
        lock.acquire()  # another warm, busy for longer than the timeout
    try:
        out = ws.doit("warm", JITWARM_SHAPE_TIMEOUT_S="1")
    finally:
        for lock in held:
            lock.release()
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    assert f"another warm held its lock {records.state_dir(ws.root) / 'locks' / only_tp8[0].key}.lock for longer " \
           f"than shape_timeout_s (1s)" in text, text
    status = ws.status()
    assert status[f"warm:{planned['tp4'].name}"] == "U" and status[f"warm:{planned['tp8'].name}"] == "R"
    assert ws.doit("warm").returncode == 0  # once the other warm is gone, the shape warms
    assert set(ws.status().values()) == {"U"}
