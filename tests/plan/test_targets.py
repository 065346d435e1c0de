"""Targets from the registry (tasks/plan/targets.py), with the machine's facts passed in."""

import json

from conftest import REPO, model_file
from tasks.plan import registry, targets

MISSING = 'hf_id = "org/cached-v3"\nconfig_source = "hf-cache"\n[[launch]]\ntp = 8\nm_list = [1, 64]\n'


def test_a_config_from_the_hf_cache_comes_through_the_facts_lookup(tmp_path):
    import tomllib

    config = tomllib.loads((REPO / "models" / "deepseek-v3-0324.toml").read_text())["config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "m.toml").write_text(MISSING)
    asked = []

    def cached_file(repo, name, revision):
        asked.append((repo, name, revision))
        return tmp_path / "config.json"

    [found] = targets.expand(registry.load(tmp_path), {}, targets.Facts(cached_file=cached_file))
    assert asked == [("org/cached-v3", "config.json", None)]
    assert found.path == targets.PLANNED and len(found.works) == 6
    [missing] = targets.expand(registry.load(tmp_path), {})  # the default facts: an empty HF cache
    assert missing.path == targets.FALLBACK and "not in the local Hugging Face cache" in missing.fallback_reason


def test_shapes_are_shared_by_content_across_targets(tmp_path):
    model_file(tmp_path, "a", "[[launch]]\ntp = 8\nm_list = [1, 64]\n")
    model_file(tmp_path, "b", '[[launch]]\ntp = 8\nargs = ["--attention-backend", "fa3"]\nm_list = [1, 64]\n')
    a, b = targets.expand(registry.load(tmp_path), {})
    assert a.name != b.name and [w.key for w in a.works] == [w.key for w in b.works]
    assert len(targets.shared_works([a, b])) == 6 and a.plan_hash == b.plan_hash
