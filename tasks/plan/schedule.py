"""The order and shares of the warm's work: which calls compile workers take when, and how
the pulled shapes' replay calls are cut among a few processes. Pure arithmetic.
"""

from __future__ import annotations

import functools
import math

from tasks.plan.targets import ShapeWork


@functools.lru_cache(maxsize=16)
def spread_order(n: int) -> tuple[int, ...]:
    """Indices 0..n-1 so that any prefix is spread over the whole range: sorted by their bits
    reversed. Built as the bit-reversal permutation of the next power of two, cut to n (linear:
    sorting by a formatted key cost 0.13 s a cold warm for 16,384-value M lists)."""
    order = [0]
    for _ in range(max(1, (n - 1).bit_length())):
        order = [2 * i for i in order] + [2 * i + 1 for i in order]
    return tuple(i for i in order if i < n)


HEAD = 1024  # calls per shape, in spread order, that find most of its kernels
TAIL_CHUNK = 64  # calls a worker takes at a time in the tail: one graph each


def queue_order(works: list[ShapeWork], m_values: dict[str, tuple[int, ...]], chunk: int,
                head: int = HEAD) -> tuple[list[tuple[int, int]], int]:
    """All (shape, M) calls in the order workers take them, and where the tail starts.

    First, a probe of each shape with token scales (Kind.token_scales): (shape, -M) asks for
    the call as sglang makes it, whose scale transpose the workers' other calls skip; so the
    transposes are queued for nvcc in the first second. Then the head: each shape's first
    `head` M values in spread order, shapes taking turns
    `chunk` calls at a time, so the early calls need many different kernels and the
    workers build them side by side. The tail: the rest, one shape after another, so a
    worker switches shapes (new buffers, a new graph pool) a few times rather than at
    every chunk, and its calls mostly find kernels already built."""
    orders = [[(s, m_values[w.key][i]) for i in spread_order(len(m_values[w.key]))] for s, w in enumerate(works)]
    queue = [(s, -m_values[w.key][0]) for s, w in enumerate(works) if w.shape.kind.token_scales and m_values[w.key]]
    for turn in range(0, min(head, max(map(len, orders), default=0)), chunk):
        for order in orders:
            queue += order[turn:min(turn + chunk, head)]
    tail_start = len(queue)
    for order in orders:
        queue += order[head:]
    return queue, tail_start


def shape_order(works: list[ShapeWork], m_values: dict[str, tuple[int, ...]]) -> tuple[list[tuple[int, int]], list[int]]:
    """All (shape, M) calls for stub discovery (tasks/runner/stubs.py), and where each shape's end:
    one worker makes all of a shape's calls, so what the shape loads is what that worker found.
    Shapes with the most calls go first; within one, the probe (see queue_order) and then its M
    values in spread order, so its distinct kernels are requested early."""
    queue, bounds = [], []
    for s in sorted(range(len(works)), key=lambda s: (-len(m_values[works[s].key]), s)):
        values = m_values[works[s].key]
        if not values:
            continue
        if works[s].shape.kind.token_scales:
            queue.append((s, -values[0]))
        queue += [(s, values[i]) for i in spread_order(len(values))]
        bounds.append(len(queue))
    return queue, bounds


def first_call(worker_index: int, works: list[ShapeWork], m_values: dict) -> list[int]:
    """A call each worker makes before the queue, waiting if need be: its own shape and a
    spread M, so the workers' first kernels (a shape's scale transpose, then a GEMM) are
    mostly different ones."""
    s = worker_index % len(works)
    values = m_values[works[s].key]
    order = spread_order(len(values))
    return [s, values[order[(worker_index // len(works)) % len(values)]]]


PIECES_PER_PROCESS = 4  # enough to even out the processes' ends; each piece costs a shape switch
# Measured on an H100 host (16 cores, bench/results/replay_procs-h100-2026-11-22.json): n
# processes starting CUDA at once are all ready after ~0.15 s * n (taking turns under a lock
# was no faster: a context took ~0.3 s while the others replayed), and a captured call costs
# ~50 us of host time alone, ~70 us with a dozen processes at once.
CONTEXT_S = 0.15
CALL_S = 60e-6


def processes(calls: int, slots: int) -> int:
    """How many processes replay `calls` fastest: n contexts cost n * CONTEXT_S before any
    work starts, and the calls take calls * CALL_S / n after, least at sqrt(work / CONTEXT_S)."""
    return max(1, min(slots, round(math.sqrt(calls * CALL_S / CONTEXT_S))))


def pieces(lengths: list[int], processes: int, chunk: int) -> list[tuple[int, int, int]]:
    """(shape, first, count) pieces of the shapes' call lists: whole capture chunks, about
    PIECES_PER_PROCESS per process, in shape order."""
    total = sum(lengths)
    size = max(chunk, -(-total // max(1, processes * PIECES_PER_PROCESS)))
    size = -(-size // chunk) * chunk
    return [(s, first, min(size, n - first)) for s, n in enumerate(lengths) for first in range(0, n, size)]
