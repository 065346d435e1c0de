"""`doit warm --shard i/N` and `doit list --shard`: shards warm each shape once into a shared root."""

from __future__ import annotations

from conftest import model_file

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
