"""Known sources under a changed toolchain (tasks/runner/rename.py, known.plan): entries renamed as
deep_gemm keys them for the new nvcc (and install path), and nothing renamed where the computation
does not give back the names deep_gemm gave."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from conftest import cache
from tasks.runner import known, rename
from tasks.state import kernel_keys, recipes, records
from tasks.state.schema import SCHEMA, Entry, ShapeDesc, ShapeRecord
from kernel_data import FLAGS_012, KERNELS, NVCC_13_0, tree

OLD = {"deep_gemm.module": "deep_gemm", "deep_gemm.layout": "0.1.x", "deep_gemm.path": "/tmp/site/deep_gemm",
       "nvcc": "13.0.88", "gpu.arch": "9.0", "gpu.sms": "132", "env.DG_JIT_NVCC_COMPILER": None}


def test_only_a_new_nvcc_or_install_path_can_be_renamed():
    assert rename.renamable(OLD, {**OLD, "nvcc": "13.1.10", "env.DG_JIT_NVCC_COMPILER": "/opt/cuda/bin/nvcc"})
    assert rename.renamable(OLD, {**OLD, "deep_gemm.path": "/opt/venv/deep_gemm"})
    assert not rename.renamable(OLD, OLD)  # nothing to rename: the names hold
    assert not rename.renamable(OLD, {**OLD, "nvcc": "13.1.10", "gpu.sms": "78"})  # the GPU is in the source
    assert not rename.renamable(OLD, {**OLD, "deep_gemm.version": "0.1.3"})
    assert not rename.renamable(OLD, {**OLD, "env.DG_JIT_CPP_STANDARD": "17"})
    assert not rename.renamable({**OLD, "nvcc": "12.8.93"}, OLD)  # the arch flag changes at 12.9


def warmed_under_old(tmp_path: Path, nvcc_text: str):
    """A 0.1.x root whose records name the 0.1.2 entries of tests/data (built with nvcc 13.0 in
    /tmp/site), each entry lost, its recipe kept; and a fake nvcc answering `nvcc_text`."""
    root = cache(tmp_path / "root", "0.1.x")
    recipe_dir = recipes.directory(root.path)
    works = []
    for i, entry in enumerate(sorted(KERNELS.glob("kernel.*"))[:4]):
        digest = f"{i:064x}"
        where = recipe_dir / f"r{i}"
        where.mkdir(parents=True)
        shutil.copy(entry / "kernel.cu", where / "kernel.cu")
        (where / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in
                                              [recipes.SRC, "-cubin", "-o", recipes.OUT, *FLAGS_012]))
        (where / "seconds").write_text("0 2.5\n")
        (where / "digests").write_text(digest + "\n")
        key = f"shape{i}"
        record = ShapeRecord(schema=SCHEMA, key=key, shape=ShapeDesc(key=key, kind="GEMM_NT_F8F8BF16", n=1, k=1,
                                                                     groups=1, m_count=1),
                             fingerprint=OLD, ok=True, entries={entry.name: Entry("kernel.cubin", 1, sha256=digest)})
        records.write_json(records.shape_path(root.path, key), msgspec.to_builtins(record))
        works.append(SimpleNamespace(key=key))
    nvcc = tmp_path / "nvcc"
    nvcc.write_text(f"#!/bin/sh\nprintf '%s' '{nvcc_text}'\n")
    nvcc.chmod(0o755)
    env = {"DG_JIT_NVCC_COMPILER": str(nvcc), "JITWARM_HOST_CACHE": "off", "PATH": "/usr/bin:/bin"}
    return root, works, recipe_dir, env


def test_a_new_nvcc_and_install_path_rename_every_entry_and_rewrite_the_include_path(tmp_path):
    newer = NVCC_13_0.replace("13.0, V13.0.88", "13.1, V13.1.10")
    root, works, recipe_dir, env = warmed_under_old(tmp_path, newer)
    fp = {**OLD, "nvcc": "13.1.10", "deep_gemm.path": "/opt/venv/deep_gemm", "env.DG_JIT_NVCC_COMPILER": env["DG_JIT_NVCC_COMPILER"]}
    renamer = rename.Renamer(root, fp, recipe_dir, env)
    found = known.plan(root, works, fp, recipe_dir, renamer=renamer)
    assert set(found) == {w.key for w in works} and renamer.renamed == 4 and not renamer.notes
    moved = [f.replace("/tmp/site", "/opt/venv") for f in FLAGS_012]
    for work, entry in zip(works, sorted(KERNELS.glob("kernel.*"))[:4]):
        [name] = found[work.key].names
        source = (entry / "kernel.cu").read_text()
        family = entry.name.split(".")[1]
        assert name == kernel_keys.legacy_name(family, "13.1", " ".join(moved), source) != entry.name
        recipe = found[work.key].missing[name]  # the lost entry, built from its source with the new include path
        assert recipes.read_argv(recipe.path)[4:] == moved and (recipe.path / "kernel.cu").read_text() == source
        assert recipe.key == recipes.shim_key(source.encode(), recipes.read_argv(recipe.path))
    # Without a renamer (or for another GPU) nothing qualifies.
    assert known.plan(root, works, fp, recipe_dir) == {}


def test_names_the_old_toolchain_does_not_give_back_are_not_renamed(tmp_path):
    root, works, recipe_dir, env = warmed_under_old(tmp_path, NVCC_13_0.replace("13.0, V13.0.88", "13.1, V13.1.10"))
    fp = {**OLD, "nvcc": "13.1.10"}
    path = records.shape_path(root.path, works[0].key)
    record = json.loads(path.read_text())
    record["entries"] = {"kernel.sm90_fp8_gemm_1d2d.00000000000000000000000000000000": record["entries"].popitem()[1]}
    path.write_text(json.dumps(record))
    renamer = rename.Renamer(root, fp, recipe_dir, env)
    found = known.plan(root, works, fp, recipe_dir, renamer=renamer)
    assert works[0].key not in found and len(found) == 3
    [note] = renamer.notes
    assert re.fullmatch(r"deep_gemm's key computed here gives kernel\.sm90_\w+\.[0-9a-f]{32} "
                        r"for kernel\.sm90_fp8_gemm_1d2d\.0{32}", note), note


def deepjit_entry(root: Path, include: Path, source: str, name: str | None = None) -> Path:
    """An entry as DeepJIT writes one (backend/cuda/backend.hpp's meta.json), named by its key unless `name`."""
    config = {"python_library_root": str(include.parent), "extra_signature": "cutlass-4.2.1",
              "include_dirs": [str(include)], "include_prefixes": ["deep_gemm/"]}
    flags = ["--gpu-architecture=sm_90a", "-O3"]
    argv = [recipes.SRC, "--cubin", "--output-file", recipes.OUT, *flags, "--include-path", str(include)]
    name = name or kernel_keys.deepjit_entry("sm90_tag", source, argv, kernel_keys.Toolchain(NVCC_13_0, config))
    entry = root / "cache" / name
    entry.mkdir(parents=True)
    (entry / "kernel.cu").write_text(source)
    command = " ".join(["/usr/local/cuda/bin/nvcc", str(entry / "kernel.cu"), "--cubin", "--output-file",
                        str(entry / "kernel.cubin"), *argv[4:]])
    (entry / "meta.json").write_text(json.dumps({"command": command, "config": config,
                                                 "compiler_info": {"path": "/usr/local/cuda/bin/nvcc", "version": NVCC_13_0},
                                                 "compiler_options": {"post_hook": None}}))
    (entry / ".committed").write_text("")
    return entry


def test_deepjit_s_config_is_read_from_an_entry_it_built_once_its_name_is_computed_back(tmp_path):
    include, source = tree(tmp_path)
    root = cache(tmp_path / "root", "0.2.x")
    assert rename.deepjit_config(root) == (None, None)
    deepjit_entry(root.path, include, source)
    config, problem = rename.deepjit_config(root)
    assert problem is None and config["extra_signature"] == "cutlass-4.2.1"
    other = cache(tmp_path / "other", "0.2.x")
    wrong = deepjit_entry(other.path, include, source, name="sm90_tag.0123456789abcdef0123456789abcdef")
    config, problem = rename.deepjit_config(other)
    assert config is None and problem.startswith("DeepJIT's key computed here gives sm90_tag.") and str(wrong) in problem


@pytest.mark.parametrize("meta", [{"command": "nvcc x", "built_by": "jitwarm, from a known recipe"}, "not json"])
def test_entries_deepjit_did_not_build_give_no_config(tmp_path, meta):
    root = cache(tmp_path / "root", "0.2.x")
    entry = root.path / "cache" / "sm90_tag.0123"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    assert rename.deepjit_config(root) == (None, None)
