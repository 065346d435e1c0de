"""Stub discovery (tasks/runner/stubs.py): the stub's arch, what a worker reports it built, and the
real entries and ready files the pool writes as each kernel lands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import FAKES, cache
from tasks.runner import stubs
from tasks.state import entries

pytestmark = pytest.mark.both_layouts

ENTRY = {"0.1.x": "kernel.sm90_fp8_gemm_1d2d.{}", "0.2.x": "sm90_fp8_gemm_1d2d.{}"}
FILES = {"0.1.x": ("kernel.cu",), "0.2.x": ("kernel.cu", "meta.json", ".committed")}


@pytest.fixture
def layout(request):
    return getattr(request, "param", "0.1.x")


def stub_build(scratch: Path, layout: str, name: str, key: str, binary: bytes = b"CUBIN stub") -> Path:
    """An entry as deep_gemm leaves it in a stub worker's scratch root: its own files, the stub, the key."""
    entry = entries.cache_dir(scratch) / name
    entry.mkdir(parents=True)
    for file in FILES[layout]:
        (entry / file).write_text(f"{file} of {name}")
    (entry / "kernel.cubin").write_bytes(binary)
    (entry / stubs.KEY_FILE).write_text(key + "\n")
    with open(scratch / stubs.LOG, "a") as log:
        log.write(key + "\n")
    return entry


def store_cubin(store: Path, key: str) -> bytes:
    store.mkdir(parents=True, exist_ok=True)
    real = f"CUBIN real {key}".encode()
    (store / f"{key}.cubin").write_bytes(real)
    return real


def found_file(path: Path, entries_found: dict, made: dict) -> None:
    path.write_text(json.dumps({"entries": entries_found, "made": {str(s): n for s, n in made.items()}}))


@pytest.mark.one_layout
@pytest.mark.parametrize("arch, flag", [("9.0", "sm_90a"), ("10.0", "sm_100a"), ("8.9", "sm_89"), (None, None),
                                        ("", None), ("nine", None)])
def test_the_stub_is_built_for_the_gpus_compute_capability(arch, flag):
    assert stubs.arch_flag(arch) == flag


@pytest.mark.one_layout
def test_the_stub_is_built_once_per_store_and_a_failed_build_says_why(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    built = stubs.StubBuild(store, str(FAKES / "fake_nvcc"), "sm_90a").result()
    assert built == store / "stub-sm_90a.cubin" and b"jitwarm_stub" in built.read_bytes()
    assert sorted(p.name for p in store.iterdir()) == ["stub-sm_90a.cubin"]  # no source or partial output left
    again = stubs.StubBuild(store, "/nonexistent/nvcc", "sm_90a")  # kept: nvcc is not run again
    assert again.result() == built
    broken = tmp_path / "nvcc"
    broken.write_text("#!/bin/sh\necho 'fatal: no such arch' >&2\nexit 1\n")
    broken.chmod(0o755)
    failed = stubs.StubBuild(store, str(broken), "sm_100a")
    assert failed.result() is None and failed.problem == "nvcc could not build it: fatal: no such arch"
    unknown = stubs.StubBuild(store, str(broken), None)
    assert unknown.result() is None and "compute capability is unknown" in unknown.problem


def test_a_worker_reports_the_entries_it_built_with_their_keys_not_the_real_ones_linked_in(tmp_path, layout):
    real = cache(tmp_path / "real", layout)
    linked = ENTRY[layout].format("a" * 32)
    (entries.cache_dir(real.path) / linked).mkdir(parents=True)
    scratch = tmp_path / "scratch"
    value = stubs.scratch_roots(real, scratch)
    if layout == "0.2.x":  # DeepJIT searches the real roots after the scratch one
        assert value == f"{scratch}:{real.path}" and not (entries.cache_dir(scratch) / linked).exists()
    else:  # 0.1.x takes one root: the real entries are linked into it
        assert value == str(scratch) and (entries.cache_dir(scratch) / linked).is_symlink()
    made = {0: 3}
    found = stubs.Found(scratch, tmp_path / "found.json", made)
    found.update(force=True)
    assert json.loads((tmp_path / "found.json").read_text()) == {"entries": {}, "made": {"0": 3}}
    name = ENTRY[layout].format("b" * 32)
    stub_build(scratch, layout, name, "k1")
    found.update()
    assert json.loads((tmp_path / "found.json").read_text())["entries"] == {name: "k1"}


def test_a_shape_waits_until_its_calls_are_made_then_for_each_entry_its_worker_built(tmp_path, layout):
    real, store = cache(tmp_path / "real", layout), tmp_path / "store"
    workers = [(tmp_path / f"stubs-{i}", tmp_path / f"found-{i}.json") for i in range(2)]
    ready = {0: tmp_path / "entries-in-0", 1: tmp_path / "entries-in-1"}
    lander = stubs.Lander(real, store, workers, {0: 10, 1: 5}, ready)
    a, b, c = (ENTRY[layout].format(ch * 32) for ch in "abc")
    stub_build(workers[0][0], layout, a, "ka")
    stub_build(workers[0][0], layout, b, "kb")
    stub_build(workers[1][0], layout, c, "kc")
    stored_before = store_cubin(store, "kc")  # e.g. compiled by a concurrent warm
    found_file(workers[0][1], {a: "ka", b: "kb"}, {0: 10})  # worker 0 made all of shape 0
    found_file(workers[1][1], {c: "kc"}, {1: 4})  # worker 1 not yet all of shape 1
    lander.poll()
    assert not ready[0].exists() and not ready[1].exists()
    real_a = store_cubin(store, "ka")
    lander.done("ka", True)
    assert entries.locate(real, a) is not None and not ready[0].exists()  # b still compiles
    written = entries.cache_dir(real.path) / a
    assert (written / "kernel.cubin").read_bytes() == real_a and not (written / stubs.KEY_FILE).exists()
    assert sorted(p.name for p in written.iterdir()) == sorted([*FILES[layout], "kernel.cubin"])
    assert real.layout.describe(written) is not None
    lander.done("kb", False)  # a compile that failed: no entry, and the shape's replay says why
    assert ready[0].exists() and entries.locate(real, b) is None and b in lander.failed
    found_file(workers[1][1], {c: "kc"}, {1: 5})
    lander.poll()
    assert ready[1].exists()
    assert (entries.cache_dir(real.path) / c / "kernel.cubin").read_bytes() == stored_before
    assert lander.written == 2


@pytest.mark.one_layout
def test_when_nothing_more_will_land_every_shape_is_let_replay(tmp_path):
    real = cache(tmp_path / "real")
    ready = {0: tmp_path / "entries-in-0"}
    lander = stubs.Lander(real, tmp_path / "store", [(tmp_path / "stubs-0", tmp_path / "found-0.json")], {0: 4}, ready)
    lander.poll()  # the worker died before writing anything
    assert not ready[0].exists()
    lander.finish()
    assert ready[0].exists()


@pytest.mark.one_layout
def test_a_dead_runs_stub_entries_are_never_published(tmp_path):
    """A killed warm leaves its scratch roots: the next warm's sweep must not mistake their stubs for builds."""
    from tasks.runner import staging

    real = cache(tmp_path / "real")
    run = staging.run_dir(real.path, "pool")
    name = ENTRY["0.1.x"].format("d" * 32)
    stub_build(run / "stubs-0", "0.1.x", name, "kd")
    run_dead = run.with_name(run.name.replace(f"-{os.getpid()}-", "-999999999-"))
    run.rename(run_dead)
    assert staging.sweep(real) == 1
    assert not run_dead.exists() and entries.locate(real, name) is None


@pytest.mark.one_layout
def test_discovery_setting_takes_stubs_or_wait_and_says_so_for_anything_else(capsys):
    assert stubs.enabled({}) and stubs.enabled({"JITWARM_DISCOVERY": "stubs"})
    assert not stubs.enabled({"JITWARM_DISCOVERY": "wait"})
    assert capsys.readouterr().out == ""
    assert stubs.enabled({"JITWARM_DISCOVERY": "off"})
    assert capsys.readouterr().out.strip() == ("warning: JITWARM_DISCOVERY='off': expected 'stubs' or 'wait'; "
                                               "discovering with stubs")
