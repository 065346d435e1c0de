"""Split a warm across N runners: `doit warm --shard i/N` or JITWARM_SHARD=i/N.

The units are the distinct shapes (content-addressed, so a shape shared by several
targets is one unit) and the targets without shapes (fallback targets, failing ones).
Each unit lands in exactly one shard; units go, largest estimated cost first, to the
least loaded shard (ties: the lowest index), so every runner computes the same split.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from tasks.plan.targets import Target

ENV = "JITWARM_SHARD"


MAX_SHARDS = 4096  # runners of one registry; the partition costs time and memory in proportion to N


class ShardError(ValueError):
    """One line naming where the bad value came from: `from_env` when JITWARM_SHARD said it (a bad
    setting, exit 1), else --shard (a usage error, exit 3)."""

    def __init__(self, message: str, from_env: bool = False):
        super().__init__(message)
        self.from_env = from_env


class Shard(NamedTuple):  # NamedTuples, not dataclasses: every doit start imports this module
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str | None, source: str) -> Shard | None:
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= MAX_SHARDS:
        raise ShardError(f"{source}: expected i/N with 1 <= i <= N <= {MAX_SHARDS} (e.g. 2/4), got {text!r}",
                         from_env=source == ENV)
    return Shard(int(match[1]), int(match[2]))


def from_settings(cli: str | None, environ) -> Shard | None:
    """The command line wins over the environment."""
    if cli:
        return parse(cli, "--shard")
    return parse(environ.get(ENV), ENV)


class Partition(NamedTuple):
    count: int
    owner: dict[str, int]  # unit -> shard index (1-based)
    loads: tuple[float, ...]  # estimated nvcc seconds per shard

    def members(self, index: int) -> list[str]:
        return sorted(u for u, s in self.owner.items() if s == index)


def target_unit(target: Target) -> str:
    return f"target:{target.name}"


def units(all_targets: list[Target]) -> dict[str, float]:
    """Every unit with its estimated cost (nvcc seconds on one core)."""
    from tasks.plan import estimate  # only a sharded run needs costs

    out: dict[str, float] = {}
    for target in all_targets:
        if target.works:
            for work in target.works:
                out.setdefault(work.key, estimate.shape_cost(work).nvcc_s)
        else:
            out[target_unit(target)] = estimate.for_target(target, all_targets).nvcc_s
    return out


def partition(all_targets: list[Target], count: int) -> Partition:
    costs = units(all_targets)
    loads = [0.0] * count
    owner: dict[str, int] = {}
    for unit in sorted(costs, key=lambda u: (-costs[u], u)):
        least = min(range(count), key=lambda i: (loads[i], i))
        loads[least] += costs[unit]
        owner[unit] = least + 1
    return Partition(count, owner, tuple(round(x, 1) for x in loads))


class Selection(NamedTuple):
    """What one shard runs: its targets, and per target the shape keys it warms here."""

    shard: Shard | None
    targets: list[Target]
    local_keys: dict[str, frozenset[str] | None]  # target name -> keys here; None = all of them


def select(all_targets: list[Target], shard: Shard | None) -> Selection:
    if shard is None:
        return Selection(None, list(all_targets), {t.name: None for t in all_targets})
    owner = partition(all_targets, shard.count).owner
    chosen, local = [], {}
    for target in all_targets:
        if target.works:
            keys = frozenset(w.key for w in target.works if owner[w.key] == shard.index)
            if keys:
                chosen.append(target)
                local[target.name] = keys
        elif owner[target_unit(target)] == shard.index:
            chosen.append(target)
            local[target.name] = None
    return Selection(shard, chosen, local)
