"""`doit warm --shard i/N` and `doit list --shard`: shards warm each shape once into a shared root."""

from __future__ import annotations

from conftest import REPO, model_file

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
DP8 = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + SMALL


def test_two_shards_warm_each_shape_once_into_a_shared_root(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    first = ws.doit("warm", "--shard", "1/2")
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = ws.compiles()
    assert after_first
    second = ws.doit("warm", JITWARM_SHARD="2/2")
    assert second.returncode == 0, second.stdout + second.stderr
    compiled = ws.compiles()
    assert len(compiled) == len(set(compiled)) > len(after_first)  # nothing built twice
    # With one cache root seen by both shards, every target is whole and up to date.
    assert set(ws.status().values()) == {"U"}
    assert ws.doit("warm").stdout.count("up to date") >= 2


def test_doit_list_honours_the_shard(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    private = {}
    for index in (1, 2):
        out = ws.doit("list", "--all", "--private", JITWARM_SHARD=f"{index}/2")
        assert out.returncode == 0, out.stderr
        private[index] = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("_shape:")}
    everything = ws.doit("list", "--all", "--private")
    all_shapes = {line.split()[0] for line in everything.stdout.splitlines() if line.startswith("_shape:")}
    assert private[1] and private[2] and not private[1] & private[2]
    assert private[1] | private[2] == all_shapes
    bad = ws.doit("list", JITWARM_SHARD="3/2")
    assert bad.returncode != 0 and "JITWARM_SHARD: expected i/N" in bad.stderr


def test_doit_list_takes_the_shard_option_as_doit_warm_does(ws):
    model_file(ws.models, "v3", TP8 + DP8)

    def listed(*args, **env):
        out = ws.doit("list", "--all", "--private", *args, cwd=REPO, **env)
        assert out.returncode == 0, out.stderr
        # The repo's pyproject.toml asks for the status column: "R _shape:..."
        return {word for line in out.stdout.splitlines() for word in line.split()[:2] if word.startswith("_shape:")}

    by_option, by_env = listed("--shard", "1/2"), listed(JITWARM_SHARD="1/2")
    assert by_option == by_env and by_option < listed()
    assert listed("--shard", "2/2") == listed() - by_option
    bad = ws.doit("list", "--shard", "3/2", cwd=REPO)
    assert bad.returncode == 3 and "--shard: expected i/N" in bad.stderr and "Traceback" not in bad.stderr


def test_doit_plan_takes_wildcards_and_totals_the_shard(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    model_file(ws.models, "other", TP8)

    def total(*args):
        out = ws.doit("plan", *args, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
        line = out.stdout.splitlines()[-1]
        return out.stdout, int(line.split(", ")[0].split()[1]), int(line.split(", ")[1].split()[0])

    text, targets, shapes = total("warm:v3*")
    assert targets == 2 and "warm:other@" not in text
    _, _, first = total("--shard", "1/2", "warm:v3*")
    _, _, second = total("--shard", "2/2", "warm:v3*")
    assert first + second == shapes and first and second  # each shard counts its own shapes
    missing = ws.doit("plan", "warm:nothing*", cwd=REPO)
    assert missing.returncode == 3 and missing.stderr.strip() == \
        "jitwarm: no target matches 'warm:nothing*'; `doit list` shows the targets"
