"""A cache root that is full or read-only (all of it, or only its
markers or shape records) gives one line naming the path and the errno, exit 1, every
target tried; nothing half-written stays behind, and nothing already warm is lost.

Faults come from tests/fakes/sitecustomize.py (FAKE_WRITE_FAIL): CI runs as root in a
container, where no directory is read-only and no small tmpfs can be mounted."""

from __future__ import annotations

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


@pytest.mark.parametrize("where, errno, text", [
    ("", "ENOSPC", "No space left on device"),
    ("", "EROFS", "Read-only file system"),
    ("jitwarm/markers", "EROFS", "Read-only file system"),
    ("jitwarm/shapes", "ENOSPC", "No space left on device"),
])
def test_a_full_or_read_only_root_fails_each_target_in_one_line_and_loses_nothing(ws, where, errno, text):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n[[launch]]\ntp = 4\nm_list = [1, 32]\n")
    (ws.root / "jitwarm" / "markers").mkdir(parents=True)
    (ws.root / "jitwarm" / "shapes").mkdir(parents=True)
    bad = ws.root / where if where else ws.root
    out = ws.doit("warm", FAKE_WRITE_FAIL=f"{bad}:{errno}")
    both = out.stdout + out.stderr
    assert out.returncode == 1, both
    assert "Traceback" not in both
    failed = [line for line in out.stdout.splitlines() if "] failed v3@" in line]
    assert len(failed) == 2, both  # both targets were tried
    for line in failed:
        assert f"cannot write {bad}" in line and f": {errno} ({text})" in line, line
    assert not [p for p in ws.root.rglob("*.tmp")], "a failed write left its temporary file"
    # The fault gone, the next warm finishes what is left (what already landed stays).
    again = ws.doit("warm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(ws.status().values()) == {"U"}
