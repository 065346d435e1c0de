"""Work order and shares (tasks/plan/schedule.py): the compile queue and the shared replay pieces."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.plan import schedule
from tasks.plan.planner import GemmShape, Kind
from tasks.plan.targets import ShapeWork

pytestmark = pytest.mark.both_layouts


def work(n, k, m_values, kind=Kind.NORMAL, groups=1):
    return ShapeWork(GemmShape(kind, n, k, groups), tuple(m_values))


def test_spread_order_is_a_permutation_whose_prefixes_cover_the_range():
    order = schedule.spread_order(3072)
    assert sorted(order) == list(range(3072))
    first = sorted(order[:16])
    assert first[0] == 0 and first[-1] > 3072 * 0.9  # 16 picks span the whole list
    assert max(b - a for a, b in zip(first, first[1:])) <= 3072 // 8


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1024, 3072, 16384])
def test_spread_order_sorts_by_the_index_bits_reversed(n):
    bits = max(1, (n - 1).bit_length())
    assert list(schedule.spread_order(n)) == sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))


def test_queue_holds_every_call_once_shapes_taking_turns_in_the_head_then_one_after_another():
    works = [work(7168, 2048, range(1, 3073)), work(2112, 7168, range(1, 3073)), work(4096, 512, range(1, 101))]
    values = {w.key: w.m_values for w in works}
    queue, tail_start = schedule.queue_order(works, values, 8, head=256)
    probes, queue, tail_start = queue[:3], queue[3:], tail_start - 3
    assert probes == [(0, -1), (1, -1), (2, -1)]  # each shape's call with sglang's scales, before all
    assert Counter(queue) == Counter((s, m) for s, w in enumerate(works) for m in w.m_values)
    assert [s for s, _ in queue[:24]] == [0] * 8 + [1] * 8 + [2] * 8
    first = sorted(m for s, m in queue[:8])
    assert first[0] == 1 and first[-1] > 2500  # the first chunk already spans the M range
    assert tail_start == 256 + 256 + 100
    assert Counter(s for s, _ in queue[:tail_start]) == {0: 256, 1: 256, 2: 100}
    tail = [s for s, _ in queue[tail_start:]]
    assert tail == [0] * (3072 - 256) + [1] * (3072 - 256)  # each shape's rest in one stretch
    head_of_0 = sorted(m for s, m in queue[:tail_start] if s == 0)
    assert max(b - a for a, b in zip(head_of_0, head_of_0[1:])) <= 3072 // 128  # the head spans the range


def test_only_shapes_with_token_scales_are_probed():
    works = [work(7168, 2048, [1, 2], Kind.BF16F32), work(4096, 7168, [8, 16], Kind.MASKED, 32),
             work(4096, 7168, [128, 256], Kind.BLOCK32), work(4096, 7168, [128, 256], Kind.CONTIG, 8)]
    queue, _ = schedule.queue_order(works, {w.key: w.m_values for w in works}, 8)
    assert [call for call in queue if call[1] < 0] == [(1, -8), (3, -128)]
    assert queue[:2] == [(1, -8), (3, -128)]


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


def test_stub_discovery_gives_each_shape_to_one_worker_longest_first_probe_first():
    works = [work(7168, 2048, range(1, 5), kind=Kind.BF16F32), work(4096, 512, range(1, 9)),
             work(2048, 512, [])]
    m_values = {w.key: w.m_values for w in works}
    queue, bounds = schedule.shape_order(works, m_values)
    assert bounds == [9, 13]  # the 8-call shape (and its probe), then the 4-call one; none for the empty one
    first, second = queue[:9], queue[9:]
    assert first[0] == (1, -1) and sorted(m for _, m in first[1:]) == list(range(1, 9))  # the scale transpose first
    assert first[1:] == [(1, m) for m in (1 + i for i in schedule.spread_order(8))]
    assert {s for s, _ in second} == {0} and sorted(m for _, m in second) == [1, 2, 3, 4]  # no transpose to probe
