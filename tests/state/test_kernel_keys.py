"""deep_gemm's own cache keys, computed here (tasks/state/kernel_keys.py): 0.1.x against entries
sgl-deep-gemm 0.1.2 built on an H200; DeepJIT (0.2.x) against digests its own hash.hpp and
parser.hpp gave for the tree below (both files unchanged from the 0.2.3.post2 wheel, compiled by
g++ 12 with a two-line std::format for the hex digest and a stub of exception.hpp, which needs
libdw; a harness fed them the same config, nvcc text, flags and source as these tests)."""

from __future__ import annotations

import pytest

from kernel_data import FLAGS_012, KERNELS, NVCC_13_0, tree
from tasks.state import kernel_keys, layouts

def legacy_argv(flags=FLAGS_012):
    return [kernel_keys.SRC, "-cubin", "-o", kernel_keys.OUT, *flags]


def test_every_0_1_2_entry_is_named_as_deep_gemm_named_it():
    found = sorted(KERNELS.glob("kernel.*"))
    assert len(found) == 15
    toolchain = kernel_keys.Toolchain(NVCC_13_0)
    for entry in found:
        family = layouts.Legacy().family(entry.name)
        source = (entry / "kernel.cu").read_text()
        assert layouts.Legacy().entry_name(family, source, legacy_argv(), toolchain) == entry.name
        # Another release of nvcc, or deep_gemm installed elsewhere: another name.
        assert layouts.Legacy().entry_name(family, source, legacy_argv(),
                                           kernel_keys.Toolchain(NVCC_13_0.replace("13.0,", "13.1,"))) != entry.name
        moved = [f.replace("/tmp/site", "/opt/venv") for f in FLAGS_012]
        assert layouts.Legacy().entry_name(family, source, legacy_argv(moved), toolchain) != entry.name


def test_a_0_1_x_recipe_of_another_form_is_not_named():
    with pytest.raises(kernel_keys.KeyUnknown, match="not the argv 0.1.x builds with"):
        kernel_keys.legacy_entry("f", "code", [kernel_keys.SRC, "--cubin", "--output-file", kernel_keys.OUT],
                                 kernel_keys.Toolchain(NVCC_13_0))
    with pytest.raises(kernel_keys.KeyUnknown, match="no release"):
        kernel_keys.legacy_entry("f", "code", legacy_argv(), kernel_keys.Toolchain("nvcc: no version"))


# What DeepJIT's own code gave for tree(): the source's digest, then the entry's with each config.
SOURCE_DIGEST = "becd9e6a3a39c379460825043553b094"
FLAGS_02 = ["--gpu-architecture=sm_90a", "-O3", "--compiler-options=-O3", "--ptxas-options=--register-usage-level=10",
            "-std=c++20"]


@pytest.mark.parametrize("signature, flags, digest", [
    ("cutlass-4.2.1", FLAGS_02, "4706c0d6093581343dbc055365c33b03"),
    ("", ["--gpu-architecture=sm_90a"], "d51e6c19cb450a9833790bed24c1f966"),
])
def test_deepjit_names_an_entry_as_its_own_hash_does(tmp_path, signature, flags, digest):
    include, source = tree(tmp_path)
    toolchain = kernel_keys.Toolchain(NVCC_13_0, {"extra_signature": signature, "include_prefixes": ["deep_gemm/"]})
    assert toolchain.hasher([str(include)]).source(source) == SOURCE_DIGEST
    argv = [kernel_keys.SRC, "--cubin", "--output-file", kernel_keys.OUT, *flags, "--include-path", str(include)]
    assert layouts.DeepJit().entry_name("sm90_tag", source, argv, toolchain) == f"sm90_tag.{digest}"
    # The whole `nvcc --version` text enters the key, a build line as much as the release.
    other = kernel_keys.Toolchain(NVCC_13_0.replace("36424714", "36424715"), toolchain.deepjit)
    assert layouts.DeepJit().entry_name("sm90_tag", source, argv, other) != f"sm90_tag.{digest}"


def test_deepjit_folds_in_only_tracked_includes_and_refuses_what_it_refuses(tmp_path):
    include, source = tree(tmp_path)
    hasher = kernel_keys.IncludeHasher([str(include)], ["deep_gemm/"])
    before = hasher.source(source)
    (include / "deep_gemm" / "common.cuh").write_text("#pragma once\n// changed\n")
    assert kernel_keys.IncludeHasher([str(include)], ["deep_gemm/"]).source(source) != before
    # cute/ is not tracked: that header need not even exist.
    assert kernel_keys.IncludeHasher([str(include)], ["deep_gemm/"]).source("#include <cute/x.hpp>\n")
    with pytest.raises(kernel_keys.KeyUnknown, match="non-standard include"):
        hasher.source('#include "deep_gemm/common.cuh"\n')
    with pytest.raises(kernel_keys.KeyUnknown, match="not found"):
        hasher.source("#include <deep_gemm/missing.cuh>\n")
    with pytest.raises(kernel_keys.KeyUnknown, match="config is not known"):
        kernel_keys.deepjit_entry("t", source, [kernel_keys.SRC, "--cubin", "--output-file", kernel_keys.OUT],
                                  kernel_keys.Toolchain(NVCC_13_0))
