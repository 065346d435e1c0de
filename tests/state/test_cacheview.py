"""A private view of a cache (tasks/state/cacheview.py): staged from every root, exact attribution, nothing lost."""

from conftest import cache, make_entry
from tasks.state import cacheview, entries

JIT = "sm90_fp8_gemm_1d2d." + "a" * 32
OLD = "transpose_fp32." + "b" * 32
NEW = "sm90_fp8_gemm_1d2d." + "c" * 32


def test_the_view_holds_every_roots_entries_and_publishes_new_ones_only_into_the_writable_root(tmp_path):
    c = cache(tmp_path / "w", "0.2.x", tmp_path / "ro")
    make_entry(tmp_path / "w", JIT, "0.2.x")
    make_entry(tmp_path / "ro", OLD, "0.2.x")
    view = cacheview.CacheView(c, tmp_path / "view")
    assert view.staged == {JIT, OLD}
    (tmp_path / "view" / "cache" / OLD / "kernel.cubin").read_bytes()  # the run loads one staged entry
    make_entry(tmp_path / "view", NEW, "0.2.x")  # and builds one
    used, created, how = view.commit()
    assert set(used) == {OLD, NEW} and created == [NEW] and how.startswith("inotify")
    assert used[OLD].root == str(tmp_path / "ro") and used[NEW].root == str(tmp_path / "w")
    assert entries.describe(c, NEW) is not None and not (tmp_path / "ro" / "cache" / NEW).exists()


def test_salvage_keeps_every_complete_entry_a_crashed_run_left_and_nothing_else(tmp_path):
    c = cache(tmp_path / "w", "0.2.x")
    cacheview.CacheView(c, tmp_path / "view")
    make_entry(tmp_path / "view", NEW, "0.2.x")
    make_entry(tmp_path / "view", JIT, "0.2.x", committed=False)  # a build that never committed
    cacheview.salvage(tmp_path / "view", c)
    assert set(entries.complete(c)) == {NEW} and not (tmp_path / "view").exists()


def test_salvage_skips_what_the_view_staged_and_publishes_what_replaced_a_broken_entry(tmp_path):
    c = cache(tmp_path / "w", "0.2.x", tmp_path / "ro")
    make_entry(tmp_path / "w", JIT, "0.2.x")
    make_entry(tmp_path / "ro", OLD, "0.2.x")
    cacheview.CacheView(c, tmp_path / "view")  # stages both, as hard links
    assert cacheview._staged(str(tmp_path / "view" / "cache" / JIT), c)
    assert cacheview._staged(str(tmp_path / "view" / "cache" / OLD), c)
    (tmp_path / "w" / "cache" / JIT / ".committed").unlink()  # the real one broke while the view ran
    make_entry(tmp_path / "view", NEW, "0.2.x")
    cacheview.salvage(tmp_path / "view", c)
    assert set(entries.complete(c)) == {JIT, OLD, NEW}
    assert not (tmp_path / "w" / "cache" / OLD).exists(), "a read-only root's entry was copied into the writable one"


def test_refresh_stages_what_the_roots_gained_and_sees_it_opened_not_created(tmp_path):
    c = cache(tmp_path / "w", "0.2.x")
    make_entry(tmp_path / "w", JIT, "0.2.x")
    view = cacheview.CacheView(c, tmp_path / "view")
    make_entry(tmp_path / "view", NEW, "0.2.x")  # the run built one itself
    make_entry(tmp_path / "w", OLD, "0.2.x")  # and a known source landed in the root meanwhile
    view.refresh()
    assert view.staged == {JIT, OLD}
    assert (tmp_path / "view" / "cache" / OLD / "kernel.cubin").stat().st_ino == \
        (tmp_path / "w" / "cache" / OLD / "kernel.cubin").stat().st_ino
    (tmp_path / "view" / "cache" / OLD / "kernel.cubin").read_bytes()  # opened: inotify sees it
    opened, created = view.checkpoint()
    assert opened == {OLD} and created == {NEW}
