"""Compile pool: dealing calls to workers, fitting GPU memory, and the CPU-side guarantees."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from conftest import DODO, model_file
from tasks.build import pool
from tasks.plan import gpumem, schedule
from tasks.plan.planner import GemmShape, Kind
from tasks.plan.targets import ShapeWork

pytestmark = pytest.mark.both_layouts

GIB = gpumem.GIB


def work(n, k, m_values, kind=Kind.NORMAL, groups=1):
    return ShapeWork(GemmShape(kind, n, k, groups), tuple(m_values))


def test_spread_order_is_a_permutation_whose_prefixes_cover_the_range():
    order = schedule.spread_order(3072)
    assert sorted(order) == list(range(3072))
    first = sorted(order[:16])
    assert first[0] == 0 and first[-1] > 3072 * 0.9  # 16 picks span the whole list
    assert max(b - a for a, b in zip(first, first[1:])) <= 3072 // 8


def test_queue_holds_every_call_once_with_shapes_taking_turns():
    works = [work(7168, 2048, range(1, 3073)), work(2112, 7168, range(1, 3073)), work(4096, 512, range(1, 101))]
    values = {w.key: w.m_values for w in works}
    queue = schedule.queue_order(works, values, 8)
    assert Counter(queue) == Counter((s, m) for s, w in enumerate(works) for m in w.m_values)
    assert [s for s, _ in queue[:24]] == [0] * 8 + [1] * 8 + [2] * 8
    first = sorted(m for s, m in queue[:8])
    assert first[0] == 1 and first[-1] > 2500  # the first chunk already spans the M range


def test_masked_buffers_are_small_and_sglang_formula_holds_for_normal():
    normal = gpumem.buffer_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    assert normal == 16384 * (2048 + 16 * 4 + 2 * 7168) + 7168 * 2048 + 56 * 16 * 4
    masked = gpumem.buffer_bytes("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32, 16384)
    full_sglang = 32 * 16384 * 7168 + 32 * 4096 * 7168 + 32 * 4 + 32 * 16384 * 4096 * 2
    assert masked < full_sglang / 5


def test_memory_reduction_halves_max_m_like_sglang_and_reports_it():
    big = work(32768, 7168, range(1, 65537))
    need_16k = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 32768, 7168, 1, 16384)
    values, reduced = gpumem.reduce_to_fit("GEMM_NT_F8F8BF16", 32768, 7168, 1, big.m_values, need_16k + 1)
    assert reduced == 16384 and values[-1] == 16384 and len(values) == 16384
    none, floor = gpumem.reduce_to_fit("GEMM_NT_F8F8BF16", 32768, 7168, 1, big.m_values, GIB)
    assert none == () and floor == gpumem.REDUCE_FLOOR


def test_pool_size_is_bounded_by_free_memory():
    works = [work(7168, 2048, range(1, 16385))]
    report = pool.PoolRun()
    per_worker = gpumem.worker_bytes("GEMM_NT_F8F8BF16", 7168, 2048, 1, 16384)
    slots = pool.plan_memory(works, report, cores=16, free=4 * per_worker + 2 * GIB, margin=2 * GIB)
    assert slots == 4 and not report.reduced
    assert pool.plan_memory(works, pool.PoolRun(), cores=16, free=None, margin=0) == 16


@pytest.mark.one_layout
def test_jobs_setting_caps_the_workers(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", JITWARM_JOBS="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "with 1 workers" in out.stdout
    assert "with 1 workers" not in ws.doit("warm", JITWARM_JOBS="0").stdout


def test_two_concurrent_runs_never_warm_a_shape_or_compile_a_kernel_twice(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
               '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')
    env = {**ws.env, "FAKE_DG_COMPILE_S": "0.3"}
    runs = [subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=300)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    warmed = [line.split(":")[0] for out in outputs for line in out.splitlines() if line.startswith("warmed ")]
    assert len(warmed) == len(set(warmed)) == 9  # 9 distinct shapes, each warmed once
    assert "reusing the concurrent warm's result" in "".join(outputs)
    assert not ws.pool_processes(), "a prestarted pool process outlived its run"
    compiled = ws.compiles()
    assert len(compiled) == len(set(compiled)), "a kernel was compiled twice"
    assert set(ws.status().values()) == {"U"}


def test_replay_that_compiles_is_a_failed_warm(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", FAKE_DG_REPLAY_EXTRA="1")
    assert out.returncode == 1
    assert "replay compiled 1 new entries after the warm; the warm missed kernels" in out.stdout + out.stderr


def test_shape_records_carry_the_completeness_proof(ws):
    import json

    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    assert ws.doit("warm").returncode == 0
    for path in (ws.root / "jitwarm" / "shapes").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["ok"] and record["replay"]["new_entries"] == 0 and record["replay"]["calls"] == 4
        assert record["pool"]["complete"] is True and record["pool"]["workers"] >= 1


def test_shared_replay_pieces_cover_every_call_once_in_whole_graphs():
    lengths = [16384] * 19 + [100, 3]
    pieces = schedule.pieces(lengths, 16, 256)
    for s, n in enumerate(lengths):
        mine = sorted((first, count) for shape, first, count in pieces if shape == s)
        assert [f for f, _ in mine] == list(range(0, n, mine[0][1])) and sum(c for _, c in mine) == n
    assert all(count % 256 == 0 for s, first, count in pieces if first + count < lengths[s])
    assert 16 * 3 <= len(pieces) <= 16 * 5  # a few pieces per process, so their ends even out
    assert schedule.pieces([4] * 6, 2, 256) == [(s, 0, 4) for s in range(6)]


def test_shared_replay_processes_balance_context_start_against_the_calls():
    assert schedule.processes(24, 16) == 1  # a few calls: one context is cheapest
    assert schedule.processes(19 * 16384, 16) == 11
    assert schedule.processes(19 * 16384, 4) == 4  # never more than memory and cores allow
    assert schedule.processes(200 * 16384, 16) == 16
