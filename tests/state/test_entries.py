"""Cache entries through each layout (tasks/state/entries.py, layouts.py), on real files."""

import hashlib
import os

import pytest

from conftest import cache, make_entry
from tasks.state import entries
from tasks.state.schema import Entry

JIT = "sm90_fp8_gemm_1d2d." + "3f2a" * 8  # a DeepJIT name: <tag>.<32 hex digits>


def test_legacy_complete_means_source_and_non_empty_binary(tmp_path):
    make_entry(tmp_path, "kernel.a.1")
    make_entry(tmp_path, "kernel.b.2", binary=b"")
    make_entry(tmp_path, "kernel.c.3", source=None)
    make_entry(tmp_path, "not-an-entry")
    assert entries.complete(cache(tmp_path)) == {"kernel.a.1": tmp_path / "cache" / "kernel.a.1"}
    got = entries.describe(cache(tmp_path), "kernel.a.1")
    assert (got.binary, got.size, got.root) == ("kernel.cubin", 6, str(tmp_path))
    assert got.sha256 == hashlib.sha256((tmp_path / "cache/kernel.a.1/kernel.cubin").read_bytes()).hexdigest()


def test_deepjit_complete_means_committed_and_non_empty_cubin_without_a_kernel_prefix(tmp_path):
    make_entry(tmp_path, JIT, "0.2.x")
    make_entry(tmp_path, "transpose_fp32." + "0" * 32, "0.2.x", committed=False)
    make_entry(tmp_path, "gemm_empty." + "1" * 32, "0.2.x", binary=b"")
    make_entry(tmp_path, "kernel.sm90.abcd", "0.2.x")  # a 0.1.x name is no DeepJIT entry
    assert set(entries.complete(cache(tmp_path, "0.2.x"))) == {JIT}
    assert entries.names(tmp_path, cache(tmp_path, "0.2.x").layout) == {
        JIT, "transpose_fp32." + "0" * 32, "gemm_empty." + "1" * 32}


@pytest.mark.parametrize("layout, name", [("0.1.x", "kernel.a.1"), ("0.2.x", JIT)])
def test_problem_names_the_entry_and_what_it_lacks(tmp_path, layout, name):
    recorded = Entry("kernel.cubin", 6)
    c = cache(tmp_path, layout)
    assert entries.problem(c, name, recorded) == f"entry {name} missing"
    entry = make_entry(tmp_path, name, layout, binary=b"xx")
    assert f"{name} changed (kernel.cubin 6 bytes -> kernel.cubin 2 bytes)" in entries.problem(c, name, recorded)
    (entry / "kernel.cubin").unlink()
    lacks = "kernel.cubin missing or empty" if layout == "0.2.x" else "kernel.cubin and kernel.so missing or empty"
    assert entries.problem(c, name, recorded) == f"entry {name} incomplete ({lacks})"
    if layout == "0.2.x":
        (entry / "kernel.cubin").write_bytes(b"\x7fCUBIN")
        assert entries.problem(c, name, recorded) is None
        (entry / ".committed").unlink()
        assert entries.problem(c, name, recorded) == f"entry {name} incomplete (no .committed)"


def test_deepjit_looks_up_roots_in_order_and_counts_read_only_ones(tmp_path):
    new, old, older = tmp_path / "new", tmp_path / "old", tmp_path / "older"
    make_entry(older, JIT, "0.2.x", binary=b"CUBIN older")
    make_entry(old, JIT, "0.2.x", binary=b"CUBIN old")
    c = cache(new, "0.2.x", old, older)
    got = entries.describe(c, JIT)
    assert (got.binary, got.size, got.root) == ("kernel.cubin", 9, str(old))
    assert entries.complete(c) == {JIT: old / "cache" / JIT}
    # Uncommitted in the writable root: DeepJIT skips it, so the read-only one still counts.
    make_entry(new, JIT, "0.2.x", committed=False)
    assert entries.describe(c, JIT).root == str(old)
    # Committed but broken in the writable root: DeepJIT would load that one, so it is incomplete.
    (new / "cache" / JIT / ".committed").write_text("")
    (new / "cache" / JIT / "kernel.cubin").write_bytes(b"")
    assert entries.describe(c, JIT) is None and JIT not in entries.complete(c)
    assert entries.problem(c, JIT, Entry("kernel.cubin", 9)).endswith("(kernel.cubin missing or empty)")


@pytest.mark.parametrize("layout, name", [("0.1.x", "kernel.a.1"), ("0.2.x", JIT)])
def test_publish_never_replaces_a_complete_entry(tmp_path, layout, name):
    root, staging = tmp_path / "root", tmp_path / "staging"
    make_entry(root, name, layout, binary=b"original")
    theirs = make_entry(staging, name, layout, binary=b"other!")
    assert entries.publish(theirs, cache(root, layout)) is False
    assert (root / "cache" / name / "kernel.cubin").read_bytes() == b"original"


@pytest.mark.parametrize("layout, name, broken", [("0.1.x", "kernel.a.1", {"binary": None}),
                                                  ("0.2.x", JIT, {"committed": False})])
def test_publish_replaces_a_broken_leftover(tmp_path, layout, name, broken):
    root, staging = tmp_path / "root", tmp_path / "staging"
    make_entry(root, name, layout, **broken)
    ours = make_entry(staging, name, layout, binary=b"fresh")
    assert entries.publish(ours, cache(root, layout)) is True
    assert entries.describe(cache(root, layout), name).size == 5
    assert not os.listdir(root / "tmp"), "the leftover was not cleaned up"


def test_publish_skips_what_a_read_only_root_holds(tmp_path):
    root, ro, staging = tmp_path / "root", tmp_path / "ro", tmp_path / "staging"
    make_entry(ro, JIT, "0.2.x")
    ours = make_entry(staging, JIT, "0.2.x", binary=b"fresh")
    assert entries.publish(ours, cache(root, "0.2.x", ro)) is False
    assert not (root / "cache" / JIT).exists()


def test_a_same_size_corruption_is_seen_by_a_warm_always_and_by_stale_once_its_mtime_moved(tmp_path, monkeypatch):
    # Regression: only the size was compared, so same-size garbage with the mtime kept read as up to date.
    from tasks import session as run_state

    make_entry(tmp_path, "kernel.a.1")
    c = cache(tmp_path)
    recorded = entries.describe(c, "kernel.a.1")
    binary = tmp_path / "cache/kernel.a.1/kernel.cubin"
    stat = binary.stat()
    binary.write_bytes(b"x" * stat.st_size)
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime kept
    monkeypatch.setattr(run_state, "verify_digests", False)
    assert entries.problem(c, "kernel.a.1", recorded) is None  # `doit stale`: cheap, trusts the mtime
    monkeypatch.setattr(run_state, "verify_digests", True)
    assert "damaged (kernel.cubin no longer matches the sha256" in entries.problem(c, "kernel.a.1", recorded)
    monkeypatch.setattr(run_state, "verify_digests", False)
    os.utime(binary)  # the mtime moved: `doit stale` re-hashes
    assert "damaged" in entries.problem(c, "kernel.a.1", recorded)
    assert entries.remove_damaged(c, {"kernel.a.1": recorded})[0].startswith("removed damaged entry kernel.a.1")
    assert not (tmp_path / "cache/kernel.a.1").exists()


def test_an_unreadable_binary_is_reported_whoever_runs(tmp_path, monkeypatch):
    make_entry(tmp_path, "kernel.a.1")
    c = cache(tmp_path)
    recorded = entries.describe(c, "kernel.a.1")
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path).endswith("kernel.a.1/kernel.cubin"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    assert entries.problem(c, "kernel.a.1", recorded) == "entry kernel.a.1 unreadable (kernel.cubin: Permission denied)"
