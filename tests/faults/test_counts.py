""""Kernels compiled" counts this run's own builds, not what a
concurrent run (or an orphan) wrote into the same root meanwhile."""

from __future__ import annotations

import re

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


def test_two_concurrent_runs_each_count_only_their_own_builds(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
               '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')
    codes, outputs = ws.concurrent_warms(2, FAKE_DG_COMPILE_S="0.3")
    assert codes == [0, 0], outputs
    counted = [int(re.search(r"failed; (\d+) kernels compiled", out).group(1)) for out in outputs]
    pools = [sum(int(n) for n in re.findall(r"^compiled (\d+) kernels", out, re.M)) for out in outputs]
    total = len(ws.compiles())
    assert total > 0 and sum(counted) == total, (counted, total)  # each kernel counted once, by its builder
    assert counted == pools, (counted, pools)  # the summary agrees with each run's own pool
