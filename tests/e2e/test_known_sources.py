"""Known sources through `doit warm`, on both layouts: after entries (and the shim's store) are
lost, the kernels an earlier warm compiled are compiled again from their recipes and the lost
entries written from them, with no compile worker calling deep_gemm for those shapes; their
replays prove them. After a new nvcc the entries are renamed as deep_gemm keys them and built
the same way; after another change deep_gemm's keys hold, the recipes are compiled first and the
workers find the new names."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import FAKES, model_file, newer_nvcc, plain_doit

pytestmark = pytest.mark.both_layouts

LAUNCHES = ("[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
            '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')


@pytest.fixture(autouse=True)
def kernel_queue_on(ws):
    ws.env["JITWARM_KERNEL_QUEUE"] = "on"


def fresh_root(ws, name: str):
    """The same models and compile log, an empty cache root and doit database: a fresh runner."""
    ws.root = ws.tmp / name
    ws.env["DG_JIT_CACHE_DIR"] = str(ws.root)
    ws.env["JITWARM_DOIT_DB"] = str(ws.tmp / f"{name}.db")
    return ws


def queue_note(out) -> tuple[int, int, int]:
    """(compiled by the queue, of them from known sources, known) from the pool's summary line."""
    found = re.search(r"(\d+) of them by the kernel queue, (\d+) of (\d+) from sources known", out.stdout)
    assert found, out.stdout
    return tuple(int(n) for n in found.groups())


def test_lost_entries_compile_from_known_sources_before_the_workers_look(ws):
    model_file(ws.models, "v3", LAUNCHES)
    first = ws.doit("warm")
    assert first.returncode == 0, first.stdout + first.stderr
    built = len(ws.compiles())
    assert queue_note(first)[2] == 0  # a cold root: nothing known yet
    lost = sorted((ws.root / "cache").iterdir())[::2]
    for entry in lost:
        shutil.rmtree(entry)
    shutil.rmtree(ws.root / "jitwarm" / "kstore")
    second = ws.doit("warm")
    assert second.returncode == 0, second.stdout + second.stderr
    by_queue, from_known, known = queue_note(second)
    assert known == len(lost) and from_known == by_queue == len(lost)  # all by the queue, from their recipes
    assert len(ws.compiles()) - built == len(lost)  # only what was lost, each once
    # No shape went to the compile workers: each was only replayed once its entries were written.
    assert "no shape to compile; replaying 9 shapes whose entries known sources give" in second.stdout
    assert f"; {len(lost)} entries of 9 shapes written from known sources" in second.stdout
    assert "warming it by discovery" not in second.stdout
    assert "replay compiled 0" in second.stdout and set(ws.status().values()) == {"U"}
    how = {json.loads(p.read_text())["verification"] for p in (ws.root / "jitwarm" / "shapes").glob("*.json")}
    assert all(h.startswith("entries rebuilt from known sources, plus entries its calls") for h in how), how


@pytest.mark.one_layout
def test_a_replay_that_compiles_after_known_sources_warms_that_shape_by_discovery(ws):
    model_file(ws.models, "v3", LAUNCHES)
    assert ws.doit("warm").returncode == 0
    # A record that no longer names every entry its shape needs: the recipes cannot give the one it lacks.
    path = sorted((ws.root / "jitwarm" / "shapes").glob("*.json"))[0]
    record = json.loads(path.read_text())
    dropped = sorted(record["entries"])[0]
    del record["entries"][dropped]
    path.write_text(json.dumps(record))
    for entry in (ws.root / "cache").iterdir():
        shutil.rmtree(entry)
    again = ws.doit("warm")
    assert again.returncode == 0, again.stdout + again.stderr
    fell_back = re.findall(r"^(\S+): known sources did not rebuild it \(its replay compiled (\d+)\); "
                           r"warming it by discovery$", again.stdout, re.M)
    assert [n for _, n in fell_back] == ["1"], again.stdout
    assert fell_back[0][0].endswith(record["key"][:8])
    after = json.loads(path.read_text())
    assert after["ok"] and dropped in after["entries"] and after["replay"]["new_entries"] == 0
    assert not after["verification"].startswith("entries rebuilt from known sources")
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_known_and_new_shapes_share_one_pool(ws):
    model_file(ws.models, "v3", LAUNCHES.split("[[launch]]")[0] + "[[launch]]" + LAUNCHES.split("[[launch]]")[1])
    assert ws.doit("warm").returncode == 0
    for entry in (ws.root / "cache").iterdir():
        shutil.rmtree(entry)
    model_file(ws.models, "v3", LAUNCHES)  # its second launch brings shapes never warmed
    (ws.models / "v3.kernels.json").write_text('{"schema": 1, "variants": [{"key_parts": {}, "shapes": {"s": {"e": "r"}}}], '
                                               '"recipes": {}}')  # and a broken kernel lock: one line, not a stop
    both = ws.doit("warm")
    assert both.returncode == 0, both.stdout + both.stderr
    assert (f"warning: {ws.models / 'v3.kernels.json'}: variants[0].shapes.s.e: recipe 'r' is not in recipes; "
            "its kernel sources are not used") in both.stdout
    found = re.search(r"compiling (\d+) shapes? \(\d+ calls\) with \d+ workers?; replaying (\d+) shapes? whose entries known",
                      both.stdout)
    assert found and int(found.group(1)) > 0 and int(found.group(2)) > 0, both.stdout
    assert "replay compiled 0" in both.stdout and "warming it by discovery" not in both.stdout
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_a_change_deep_gemm_keys_kernels_by_compiles_every_known_kernel_again(ws):
    # A DG_JIT_* setting enters deep_gemm's cache key (as nvcc's version does): every kernel is keyed anew.
    model_file(ws.models, "v3", LAUNCHES)
    assert ws.doit("warm").returncode == 0
    assert plain_doit(ws, "lock").returncode == 0
    before = len(list((ws.root / "cache").iterdir()))
    changed = ws.doit("warm", DG_JIT_CPP_STANDARD="17")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    _, from_known, known = queue_note(changed)
    assert known == before and from_known > 0
    assert "replay compiled 0" in changed.stdout
    assert set(ws.status(DG_JIT_CPP_STANDARD="17").values()) == {"U"}
    # One lock serves both: each set of key parts is a variant, and locking one keeps the other.
    second = plain_doit(ws, "lock", DG_JIT_CPP_STANDARD="17")
    assert second.returncode == 0 and "9 shapes, " in second.stdout and "(and 1 variant for other GPUs or toolchains)" \
        in second.stdout, second.stdout + second.stderr
    assert len(json.loads((ws.models / "v3.kernels.json").read_text())["variants"]) == 2
    compiled = len(ws.compiles())
    fresh = fresh_root(ws, "fresh").doit("warm", DG_JIT_CPP_STANDARD="17")
    assert fresh.returncode == 0 and "no shape to compile; replaying 9 shapes" in fresh.stdout, fresh.stdout
    assert len(ws.compiles()) - compiled == known and "replay compiled 0" in fresh.stdout


def test_a_new_nvcc_renames_every_entry_and_builds_it_from_its_known_source(ws):
    # deep_gemm keys every kernel on nvcc's version (0.1.x its release, 0.2.x the whole text): each entry's
    # new name is computed, and its recipe compiled straight into it, with no worker looking for it.
    model_file(ws.models, "v3", LAUNCHES)
    assert ws.doit("warm").returncode == 0 and plain_doit(ws, "lock").returncode == 0
    kernels = len(json.loads((ws.models / "v3.kernels.json").read_text())["recipes"])
    before, built = {p.name for p in (ws.root / "cache").iterdir()}, len(ws.compiles())
    newer = newer_nvcc(ws)
    upgraded = ws.doit("warm", DG_JIT_NVCC_COMPILER=str(newer))
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert (f"9 shapes warmed under another toolchain (env.DG_JIT_NVCC_COMPILER {FAKES / 'fake_nvcc'} -> {newer}; "
            f"nvcc 13.0.88 -> 13.1.80{'; nvcc.version_sha256 ' if ws.layout == '0.2.x' else ')'}") in upgraded.stdout, \
        upgraded.stdout
    assert "their entries are named as deep_gemm keys them here, and built from their known sources" in upgraded.stdout
    assert "no shape to compile; replaying 9 shapes whose entries known sources give" in upgraded.stdout
    assert "replay compiled 0" in upgraded.stdout and "warming it by discovery" not in upgraded.stdout
    after = {p.name for p in (ws.root / "cache").iterdir()}
    assert before < after and len(after - before) == len(before)  # every kernel under a new name, the old kept
    assert len(ws.compiles()) - built == len(before)  # each once, from its recipe
    assert set(ws.status(DG_JIT_NVCC_COMPILER=str(newer)).values()) == {"U"}
    # A fresh runner with the newer nvcc and the lock taken under the older one (for 0.2.x, with no
    # entry DeepJIT built there, the config the lock recorded).
    built = len(ws.compiles())
    fresh = fresh_root(ws, "fresh").doit("warm", DG_JIT_NVCC_COMPILER=str(newer))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "9 shapes warmed under another toolchain" in fresh.stdout, fresh.stdout
    assert "no shape to compile; replaying 9 shapes whose entries known sources give" in fresh.stdout
    assert len(ws.compiles()) - built == kernels and "replay compiled 0" in fresh.stdout
    assert {p.name for p in (ws.root / "cache").iterdir()} == after - before
    assert set(ws.status(DG_JIT_NVCC_COMPILER=str(newer)).values()) == {"U"}


@pytest.mark.one_layout  # both layouts write entries from known sources in the tests above
def test_a_fresh_runner_builds_the_entries_a_committed_kernel_lock_names(ws):
    model_file(ws.models, "v3", LAUNCHES.split("[[launch]]")[0] + "[[launch]]" + LAUNCHES.split("[[launch]]")[1])
    cold = plain_doit(ws, "lock")  # nothing warm yet: nothing to lock, and it says what
    assert cold.returncode == 1 and "6 shapes not locked: warm them" in cold.stderr, cold.stdout + cold.stderr
    assert not (ws.models / "v3.kernels.json").exists()
    assert ws.doit("warm").returncode == 0
    locked = plain_doit(ws, "lock")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    lock = json.loads((ws.models / "v3.kernels.json").read_text())
    [variant] = lock["variants"]
    assert len(variant["shapes"]) == 6 and f"{ws.models / 'v3.kernels.json'}: 6 shapes, " in locked.stdout
    kernels = len(lock["recipes"])
    built = len(ws.compiles())
    fresh = fresh_root(ws, "fresh").doit("warm")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "no shape to compile; replaying 6 shapes whose entries known sources give" in fresh.stdout
    assert len(ws.compiles()) - built == kernels  # each locked source once, nothing found by discovery
    assert "replay compiled 0" in fresh.stdout and "warming it by discovery" not in fresh.stdout
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_a_bake_whose_known_source_fails_to_compile_says_why_in_one_line(ws):
    model_file(ws.models, "v3", LAUNCHES.split("[[launch]]")[0] + "[[launch]]" + LAUNCHES.split("[[launch]]")[1])
    assert ws.doit("warm", JITWARM_GPU="H200").returncode == 0
    assert plain_doit(ws, "lock", JITWARM_GPU="H200").returncode == 0
    path = ws.models / "v3.kernels.json"
    lock = json.loads(path.read_text())
    broken = sorted(lock["recipes"])[0]
    lock["recipes"][broken]["argv"] = [a for a in lock["recipes"][broken]["argv"] if a not in ("-o", "@OUT@")]
    path.write_text(json.dumps(lock))
    [variant] = lock["variants"]
    shapes = [key for key, named in variant["shapes"].items() if broken in named.values()]
    baked = fresh_root(ws, "bake").doit("warm", JITWARM_GPU="H200", JITWARM_STAND_IN_GPU="none")
    assert baked.returncode == 1
    failed = re.findall(r"baking it for the declared H200 from known sources failed \(fake nvcc: no -o/--output-file "
                        r"in: [^)]*\); no GPU here to find its kernels otherwise", baked.stdout)
    assert failed, baked.stdout
    records = {p.stem: json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "shapes").glob("*.json")}
    assert {k for k, r in records.items() if not r.get("baked")} == set(shapes)
    assert all(r.get("baked") for k, r in records.items() if k not in shapes) and len(records) == len(variant["shapes"])
