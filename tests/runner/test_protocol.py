"""The pool plan and messages (tasks/runner/child/protocol.py) survive the trip to a child and back."""

import msgspec

from conftest import cache
from tasks.runner.child import protocol


def test_a_pool_plan_round_trips_through_json(tmp_path):
    shape = protocol.Shape("GROUPED_GEMM_NT_F8F8BF16_CONTIG", 4096, 7168, 32)
    plan = protocol.PoolPlan(
        module="deep_gemm", cache=cache(tmp_path, "0.2.x", tmp_path / "ro").as_plan(),
        compile=[protocol.CompileJob(plan=protocol.CompilePlan(module="deep_gemm", shapes=[shape], rows=[4096],
                                                               busy_flag="b", first_call=(0, 128)),
                                     env={"DG_JIT_CACHE_DIR": "x"}, log="l", result="r", status="s")],
        queue=[(0, 128), (0, 256)], chunk=8, tail_start=2, tail_chunk=64, replays=[], shared=None, timeout_s=1800.0, parallel_replay=4,
        timings="t")
    assert msgspec.json.decode(msgspec.json.encode(plan), type=protocol.PoolPlan) == plan


def test_a_child_problem_is_one_line_from_its_log():
    tail = ["Traceback (most recent call last):", f"{protocol.PROBLEM_PREFIX}no CUDA device visible to torch"]
    assert protocol.problem_line(tail) == "no CUDA device visible to torch"
    assert protocol.problem_line(["plain crash"]) == ""
