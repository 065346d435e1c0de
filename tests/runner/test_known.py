"""Known sources (tasks/runner/known.py): which shapes qualify, the order their entries should
land in, and the entries and ready files written as the kernel queue's compiles land."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from conftest import cache, model_file
from tasks.runner import known
from tasks.state import entries, recipes, records
from tasks.state.cacheroot import CacheRoot

pytestmark = pytest.mark.both_layouts

LAUNCH = "[[launch]]\ntp = 8\nm_list = [1, 32, 128]\n"


def warmed(ws) -> tuple[CacheRoot, list, dict]:
    """A root warmed with the kernel queue (so with recipes): its cache, works and fingerprint."""
    ws.env["JITWARM_KERNEL_QUEUE"] = "on"
    model_file(ws.models, "v3", LAUNCH)
    assert ws.doit("warm").returncode == 0
    shapes = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "shapes").glob("*.json")]
    works = [SimpleNamespace(key=s["key"]) for s in shapes]  # all known.plan asks of a ShapeWork
    return cache(ws.root, ws.layout), works, shapes[0]["fingerprint"]


def recipe_dir(ws):
    return recipes.directory(ws.root)


@pytest.mark.one_layout
def test_only_shapes_whose_every_lost_entry_has_a_recipe_and_whose_names_still_hold(ws):
    root, works, fp = warmed(ws)
    assert all(not shape.missing for shape in known.plan(root, works, fp, recipe_dir(ws)).values())
    assert len(known.plan(root, works, fp, recipe_dir(ws))) == len(works)  # nothing lost: replays only
    for entry in (ws.root / "cache").iterdir():
        shutil.rmtree(entry)
    found = known.plan(root, works, fp, recipe_dir(ws))
    assert set(found) == {w.key for w in works}
    assert all(set(shape.missing) == set(shape.names) for shape in found.values())
    # A change deep_gemm's keys hold (here nvcc's version): the recorded names no longer hold.
    assert known.plan(root, works, {**fp, "nvcc": fp["nvcc"] + ".1"}, recipe_dir(ws)) == {}
    # A lost entry with no recipe: that shape is found by discovery.
    victim = works[0]
    record, _ = records.read_shape(ws.root, victim.key)
    digest = next(iter(record.entries.values())).sha256
    for where in recipe_dir(ws).iterdir():
        if digest in (where / "digests").read_text().split():
            shutil.rmtree(where)
    assert victim.key not in known.plan(root, works, fp, recipe_dir(ws))
    # Nor is a shape whose last warm failed.
    other = works[1]
    path = records.shape_path(ws.root, other.key)
    path.write_text(json.dumps({**json.loads(path.read_text()), "ok": False, "error": "boom"}))
    assert other.key not in known.plan(root, works, fp, recipe_dir(ws))


@pytest.mark.one_layout
def test_ready_order_follows_a_longest_first_schedule():
    def recipe(key, seconds):
        return recipes.Recipe(key, None, seconds)
    shapes = {"long": known.KnownShape(["a"], {"a": recipe("r1", 10.0)}),
              "short": known.KnownShape(["b", "c"], {"b": recipe("r2", 2.0), "c": recipe("r3", 3.0)}),
              "none": known.KnownShape(["d"], {})}
    assert known.ready_order(shapes, slots=2) == {"long": 10.0, "short": 5.0, "none": 0.0}
    assert known.ready_order(shapes, slots=1)["short"] == 15.0


def test_the_lander_writes_each_entry_once_its_recipe_compiled_and_readies_shapes_whole(tmp_path, layout):
    root = cache(tmp_path / "root", layout)
    (tmp_path / "store").mkdir()
    rec = {}
    for key in ("r1", "r2"):
        where = tmp_path / "recipes" / key
        where.mkdir(parents=True)
        (where / "kernel.cu").write_text(f"// {key}\n")
        (where / "argv").write_bytes(b"\0".join([b"@SRC@", b"-cubin", b"-o", b"@OUT@"]) + b"\0")
        rec[key] = recipes.Recipe(key, where, 1.0)
    (tmp_path / "store" / "r1.cubin").write_bytes(b"CUBIN r1")
    a, b = ("kernel.a.1", "kernel.b.2") if layout == "0.1.x" else ("fam_a." + "1" * 32, "fam_b." + "2" * 32)
    shapes = {"one": known.KnownShape([a], {a: rec["r1"]}), "two": known.KnownShape([a, b], {a: rec["r1"], b: rec["r2"]})}
    ready = {key: tmp_path / f"ready-{key}" for key in shapes}
    lander = known.Lander(root, tmp_path / "store", "/usr/bin/nvcc", shapes, ready)
    lander.start()
    assert not any(p.exists() for p in ready.values())
    lander.done("r1", True)
    lander.done("unrelated", True)  # a kernel a compile worker found: not the lander's
    assert ready["one"].exists() and not ready["two"].exists()
    described = entries.describe(root, a)
    assert described is not None and (root.path / "cache" / a / described.binary).read_bytes() == b"CUBIN r1"
    assert (root.path / "cache" / a / "kernel.cu").read_text() == "// r1\n"
    if layout == "0.2.x":
        meta = json.loads((root.path / "cache" / a / "meta.json").read_text())
        assert meta["command"] == f"/usr/bin/nvcc {root.path}/cache/{a}/kernel.cu -cubin -o {root.path}/cache/{a}/kernel.cubin"
    lander.done("r2", False)  # its compile failed: the shape's replay compiles it, then discovery
    assert ready["two"].exists() and entries.describe(root, b) is None
    assert lander.written == 1 and lander.failed == {"r2": "its compile failed"}
    assert not list((root.path / "tmp").iterdir())  # nothing left of the assembly
