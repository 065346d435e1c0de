"""doit wiring (tasks/cli/doit_tasks.py): uptodate checks never raise, and say why."""

from conftest import cache, model_file
from tasks.cli import doit_tasks
from tasks.plan import registry, targets
from tasks.session import Session


def one_target(tmp_path):
    model_file(tmp_path, "v3", "[[launch]]\ntp = 8\nm_list = [1, 64]\n")
    [target] = targets.expand(registry.load(tmp_path), {})
    return target


def test_a_check_that_cannot_compute_is_stale_with_the_reason_never_an_exception(tmp_path):
    def broken():
        raise OSError("nvcc hung")

    check = doit_tasks.TargetCheck(Session(cache(tmp_path / "root"), None, broken), one_target(tmp_path))
    assert check(None, None) is False
    assert repr(check) == "staleness check failed: OSError: nvcc hung"


def test_an_unwarmed_target_says_so_and_the_group_counts_it(tmp_path):
    session = Session(cache(tmp_path / "root"), None, lambda: {})
    check = doit_tasks.TargetCheck(session, one_target(tmp_path))
    group = doit_tasks.AnyStale([check])
    assert group(None, None) is False and repr(check) == "not warmed yet (no marker)"
    assert repr(group).startswith("1 of 1 target stale: v3@tp8-")


def test_long_info_values_print_whole():
    assert repr(doit_tasks.Shown("x" * 200)) == "x" * 200
