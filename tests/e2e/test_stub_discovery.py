"""Stub discovery through `doit warm`, on both layouts (tasks/runner/stubs.py): the compile workers
find every kernel with a stub binary instead of waiting for nvcc, the real entries are written as
the kernel queue builds them, and each shape's replay proves them. The result is the cache a warm
that waits for nvcc leaves: the same entries, the same binaries, nothing stubbed in it."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import FAKES, Workspace, model_file

pytestmark = pytest.mark.both_layouts

LAUNCH = ("[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
          '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')


def with_stubs(ws: Workspace) -> Workspace:
    """The kernel queue on, and a GPU whose compute capability the fingerprint reads (the stand-in nvidia-smi)."""
    ws.env.update(JITWARM_KERNEL_QUEUE="on", FAKE_GPU_ARCH="9.0", PATH=f"{FAKES / 'smi'}:{ws.env['PATH']}")
    model_file(ws.models, "v3", LAUNCH)
    return ws


def binaries(ws: Workspace) -> dict[str, bytes]:
    return {entry.name: (entry / "kernel.cubin").read_bytes() for entry in (ws.root / "cache").iterdir()}


def shape_records(ws: Workspace) -> list[dict]:
    return [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "shapes").glob("*.json")]


def test_a_cold_warm_finds_its_kernels_with_stubs_and_leaves_the_cache_a_waiting_warm_leaves(ws, tmp_path_factory):
    out = with_stubs(ws).doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = next(line for line in out.stdout.splitlines() if line.startswith("compiled "))
    assert "found with stub binaries" in summary and " 0 calls deferred" in summary, summary
    assert re.match(r"compiled \d+ kernels by the kernel queue in [0-9.]+s, found in [0-9.]+s with ", summary), summary
    written = int(re.search(r"(\d+) entries written as each kernel landed", summary).group(1))
    records = shape_records(ws)
    assert records and all(r["ok"] and r["replay"]["new_entries"] == 0 for r in records)
    assert "by discovery" not in out.stdout
    got = binaries(ws)
    assert written == len(got) and not any(b"jitwarm_stub" in binary for binary in got.values())
    # Each kernel compiled once, plus the stub itself (built once for the store).
    compiled = [line for line in ws.compile_log.read_text().splitlines()]
    stub_lines = [line for line in compiled if "jitwarm_stub" in line]
    assert len(stub_lines) == 1 and len(compiled) - 1 == len(set(compiled) - set(stub_lines)) == len(got)

    waiting = with_stubs(Workspace(tmp_path_factory.mktemp("waiting"), ws.layout))
    plain = waiting.doit("warm", JITWARM_DISCOVERY="wait")
    assert plain.returncode == 0 and "found with stub binaries" not in plain.stdout
    assert binaries(waiting) == got
    assert {r["key"]: sorted(r["entries"]) for r in shape_records(waiting)} == \
        {r["key"]: sorted(r["entries"]) for r in records}  # each shape's entries, exactly


def test_a_shape_whose_replay_needs_more_than_stubs_found_is_warmed_again_without_them(ws):
    out = with_stubs(ws).doit("warm", FAKE_DG_REPLAY_EXTRA="1")  # replays load a kernel no worker asks for
    assert out.returncode == 0, out.stdout + out.stderr
    retried = re.findall(r"its replay compiled 1 after stub discovery", out.stdout)
    records = shape_records(ws)
    assert retried and len(retried) == len(records)
    assert all(r["ok"] and r["replay"]["new_entries"] == 0 for r in records)
    assert len(re.findall(r"^compiled ", out.stdout, re.M)) == 2  # the stub run, then one that waits for nvcc


@pytest.mark.one_layout
def test_without_the_gpus_compute_capability_workers_wait_for_nvcc_and_say_so(ws):
    with_stubs(ws).env.pop("FAKE_GPU_ARCH")
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("note: discovering without stub binaries (the GPU's compute capability is unknown): workers wait "
            "for each kernel's nvcc") in out.stdout
    assert all(r["ok"] for r in shape_records(ws))


def test_kernels_a_root_already_holds_are_loaded_by_stub_workers_not_compiled_again(ws):
    """A new shape shares kernels with warmed ones (here the scale transpose every FP8 shape uses):
    the stub workers see the real roots (0.2.x searches them, 0.1.x links their entries into its
    scratch root), so even with the shim's store gone those kernels are not compiled again."""
    with_stubs(ws)
    assert ws.doit("warm").returncode == 0
    before = {entry.name for entry in (ws.root / "cache").iterdir()}
    logged = len(ws.compile_log.read_text().splitlines())
    shutil.rmtree(ws.root / "jitwarm" / "kstore")  # e.g. aged out: nothing to copy binaries from
    model_file(ws.models, "v3", LAUNCH + "[[launch]]\ntp = 4\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "found with stub binaries" in out.stdout
    again = [line.removeprefix("// entry: ") for line in ws.compile_log.read_text().splitlines()[logged:]]
    named = _idents(ws)
    rebuilt = {named.get(ident) for ident in again} & before
    assert not rebuilt, f"compiled again: {sorted(rebuilt)}"
    after = {entry.name for entry in (ws.root / "cache").iterdir()}
    assert before < after and all(r["ok"] and r["replay"]["new_entries"] == 0 for r in shape_records(ws))


def _idents(ws: Workspace) -> dict[str, str]:
    """The stand-ins' kernel ident (kernel.cu's first line, what the compile log holds) -> its entry."""
    named = {}
    for entry in (ws.root / "cache").iterdir():
        with open(entry / "kernel.cu") as fh:
            named[fh.readline().strip().removeprefix("// entry: ")] = entry.name
    return named
