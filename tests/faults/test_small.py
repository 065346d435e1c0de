"""Small faults, one test each."""

from __future__ import annotations

import os

from conftest import cache, model_file
from tasks.runner.child import zygote


def test_nothing_is_said_to_be_queued_when_nothing_can_warm(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32]\n")
    out = ws.doit("warm", JITWARM_DEEP_GEMM_MODULE="no_such_deep_gemm")
    assert out.returncode == 1
    assert "queued " not in out.stdout, out.stdout
    assert "no_such_deep_gemm is not installed" in out.stdout


def test_the_zygote_removes_the_build_directories_its_workers_left(tmp_path):
    # deep_gemm 0.1.x builds in tmp/<pid>-<uuid>/ (as the 0.1.x stand-in does); a deferred or
    # killed call leaves its directory behind.
    root = tmp_path / "cache"
    for name in ("111-aa", "111-bb", "222-cc", "333-dd", "1110-ee"):
        (root / "tmp" / name).mkdir(parents=True)
    zygote._remove_build_leftovers(cache(root), [111, 222])
    assert sorted(os.listdir(root / "tmp")) == ["1110-ee", "333-dd"]
