"""Damaged state repairs itself on the next warm, on both cache layouts: a cache entry's
binary overwritten with garbage (of another size, or of the same size with its mtime kept), and
a poisoned shim store (tests/runner/test_nvcc_shim.py covers the shim's own check)."""

from __future__ import annotations

import os

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


def warm_v3(ws) -> None:
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    assert ws.doit("warm").returncode == 0


def _victim(ws):
    return sorted((ws.root / "cache").glob("*/kernel.cubin"))[0]


def _assert_repaired(ws, out, victim):
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert f"removed damaged entry {victim.parent.name}" in out.stdout
    assert b"CUBIN" in victim.read_bytes()[:8]
    assert set(ws.status().values()) == {"U"}


def test_a_garbage_binary_is_stale_and_the_next_warm_takes_it_out_and_rebuilds_it(ws, template):
    # Before: every warm failed in a worker ("device kernel image is invalid"), never removing the entry.
    ws = ws.copy_of(template(ws.layout, "v3-tp8-m2", warm_v3))
    victim = _victim(ws)
    victim.write_bytes(b"garbage, longer than the binary it replaces")
    assert set(ws.status().values()) == {"R"}
    _assert_repaired(ws, ws.doit("warm"), victim)


def test_same_size_garbage_with_its_mtime_kept_is_caught_by_the_warm(ws, template):
    # Before: only the size was compared, so this read as up to date forever.
    ws = ws.copy_of(template(ws.layout, "v3-tp8-m2", warm_v3))
    victim = _victim(ws)
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _assert_repaired(ws, ws.doit("warm"), victim)
