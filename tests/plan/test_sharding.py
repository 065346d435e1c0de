"""`--shard i/N`: every shape in exactly one shard, shards balanced by estimated cost."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from tasks.host import settings
from tasks.plan import registry, sharding, targets


@pytest.fixture(scope="module")
def shipped() -> list[targets.Target]:
    return targets.expand(registry.load(settings.REPO_ROOT / "models"))


def test_parse_accepts_i_of_n_and_names_the_source_of_a_bad_value():
    assert sharding.parse("2/4", "--shard") == sharding.Shard(2, 4)
    assert sharding.parse("", "--shard") is None
    for bad in ("0/4", "5/4", "2", "a/b", "2/0", "-1/3"):
        with pytest.raises(sharding.ShardError, match=r"^JITWARM_SHARD: expected i/N"):
            sharding.parse(bad, "JITWARM_SHARD")
    assert sharding.from_settings("1/2", {"JITWARM_SHARD": "2/2"}) == sharding.Shard(1, 2)  # the flag wins
    assert sharding.from_settings("", {"JITWARM_SHARD": "2/2"}) == sharding.Shard(2, 2)


@pytest.mark.parametrize("count", range(1, 9))
def test_shipped_registry_shards_cover_every_shape_once(shipped, count):
    all_keys = set(targets.shared_works(shipped))
    seen = Counter()
    unit_targets = Counter()
    for index in range(1, count + 1):
        chosen = sharding.select(shipped, sharding.Shard(index, count))
        keys = set()
        for target in chosen.targets:
            local = chosen.local_keys[target.name]
            if target.works:
                keys |= set(local) if local is not None else {w.key for w in target.works}
            else:
                unit_targets[target.name] += 1
        seen.update(keys)
    assert set(seen) == all_keys and set(seen.values()) == {1}
    assert unit_targets == Counter({t.name: 1 for t in shipped if not t.works})


def test_every_shipped_target_is_planned_but_those_whose_spec_says_why_not():
    # MiMo's two targets were fallback units (whole servers) until the planner learnt MiMo. The four
    # below say in their file why they warm through the server (an unknown quantization config, an
    # architecture or an INT4 scheme the planner does not restate).
    shipped = targets.expand(registry.load(settings.REPO_ROOT / "models"))
    assert {t.model for t in shipped if t.path != targets.PLANNED} == {
        "qwen3-235b-a22b-fp8", "glm-4.5-fp8", "longcat-flash-fp8", "kimi-k2-thinking"}


@pytest.mark.parametrize("count", range(1, 9))
def test_shipped_registry_shards_are_balanced_within_1_5x(shipped, count):
    loads = sharding.partition(shipped, count).loads
    assert max(loads) <= 1.5 * statistics.mean(loads), (count, loads)


def test_partition_is_deterministic_whatever_the_order(shipped):
    assert sharding.partition(shipped, 5) == sharding.partition(list(reversed(shipped)), 5)
