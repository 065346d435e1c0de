"""The nvcc shim (tasks/runner/nvcc_shim.sh), called through a shell from the build directory as
each deep_gemm layout calls nvcc: 0.1.x with `-o`, 0.2.x (DeepJIT) with `--output-file`."""

import re
import shlex
import subprocess
import time

import pytest

from conftest import FAKES
from tasks.runner import pool

STYLES = {"0.1.x": ["-cubin", "-o"], "0.2.x": ["--cubin", "--output-file"]}


def call(tmp_path, build: str, style: str, env: dict, source: str = "// entry: k.1\nkernel\n", **popen):
    """`cd <build> && <shim> <build>/kernel.cu <cubin flag> <out flag> <build>/kernel.cubin ...`."""
    where = tmp_path / build
    where.mkdir(exist_ok=True)
    (where / "kernel.cu").write_text(source)
    cubin, out = STYLES[style]
    argv = [str(pool.SHIM), str(where / "kernel.cu"), cubin, out, str(where / "kernel.cubin"),
            "--gpu-architecture=sm_90a", "--include-path", "/opt/deep_gemm/include"]
    command = f"cd {shlex.quote(str(where))} && {shlex.join(argv)} 2>&1"
    return subprocess.Popen(command, shell=True, env=env, stdout=subprocess.PIPE, text=True, **popen)


@pytest.fixture
def env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "JITWARM_REAL_NVCC": str(FAKES / "fake_nvcc"),
            "JITWARM_KSTORE": str(tmp_path / "store"), "FAKE_DG_COMPILE_LOG": str(tmp_path / "compiles.log"),
            "JITWARM_BUSY_FLAG": str(tmp_path / "busy"), "FAKE_DG_COMPILE_S": "0.05"}


def compiles(tmp_path) -> list[str]:
    log = tmp_path / "compiles.log"
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("style", list(STYLES))
def test_each_kernel_compiles_once_across_build_directories(tmp_path, env, style):
    first = call(tmp_path, "tmp-a", style, env)
    assert first.wait(timeout=30) == 0, first.stdout.read()
    second = call(tmp_path, "tmp-b", style, env)
    assert second.wait(timeout=30) == 0, second.stdout.read()
    assert compiles(tmp_path) == ["k.1"], "the second build directory compiled the same kernel again"
    assert (tmp_path / "tmp-b" / "kernel.cubin").read_bytes() == (tmp_path / "tmp-a" / "kernel.cubin").read_bytes()
    other = call(tmp_path, "tmp-c", style, env, source="// entry: k.2\nanother kernel\n")
    assert other.wait(timeout=30) == 0 and compiles(tmp_path) == ["k.1", "k.2"]


def test_version_passes_through_whole(tmp_path, env):
    text = subprocess.run([str(pool.SHIM), "--version"], env=env, capture_output=True, text=True).stdout
    assert "release 13.0, V13.0.88" in text and text.startswith("nvcc: NVIDIA") and "Build cuda_13.0" in text


@pytest.mark.parametrize("style", list(STYLES))
def test_a_kernel_another_worker_builds_is_busy_at_once_or_waited_for(tmp_path, env, style):
    slow = call(tmp_path, "tmp-a", style, {**env, "FAKE_DG_COMPILE_S": "2"})
    deadline = time.monotonic() + 10
    while not list((tmp_path / "store").glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = call(tmp_path, "tmp-b", style, {**env, "JITWARM_NVCC_WAIT": "0"})
    assert busy.wait(timeout=5) == 75 and "being compiled by another worker" in busy.stdout.read()
    key = (tmp_path / "busy").read_text().strip()  # the kernel it waits for: retry once it is stored
    assert re.fullmatch(r"[0-9a-f]{32}", key) and list((tmp_path / "store").glob("*.lock")) == [
        tmp_path / "store" / f"{key}.lock"]
    waiter = call(tmp_path, "tmp-c", style, {**env, "JITWARM_NVCC_WAIT": "1"})
    assert waiter.wait(timeout=30) == 0 and slow.wait(timeout=30) == 0
    assert (tmp_path / "store" / f"{key}.cubin").is_file()
    assert compiles(tmp_path) == ["k.1"]
    assert (tmp_path / "tmp-c" / "kernel.cubin").read_bytes() == (tmp_path / "tmp-a" / "kernel.cubin").read_bytes()


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("damage", ["garbage", "no digest"])
def test_a_damaged_or_planted_stored_cubin_is_compiled_again_not_copied(tmp_path, env, style, damage):
    # Regression: any non-empty cubin in the store was copied into rebuilt entries unchecked, so the
    # target failed on every warm until the store was deleted by hand.
    first = call(tmp_path, "tmp-a", style, env)
    assert first.wait(timeout=30) == 0, first.stdout.read()
    [stored] = (tmp_path / "store").glob("*.cubin")
    good = stored.read_bytes()
    if damage == "garbage":
        stored.write_bytes(b"not a cubin at all")
    else:
        stored.with_suffix(".sha256").unlink()  # a store from before digests, or a planted file
    again = call(tmp_path, "tmp-b", style, env)
    assert again.wait(timeout=30) == 0, again.stdout.read()
    assert compiles(tmp_path) == ["k.1", "k.1"]
    assert (tmp_path / "tmp-b" / "kernel.cubin").read_bytes() == good == stored.read_bytes()


@pytest.mark.parametrize("style", list(STYLES))
def test_a_stub_worker_gets_the_stub_at_once_and_the_kernel_is_requested_from_the_queue(tmp_path, env, style):
    stub = tmp_path / "stub.cubin"
    stub.write_bytes(b"CUBIN stub")
    log = tmp_path / "builds.log"
    stubbed = {**env, "JITWARM_NVCC_QUEUE": str(tmp_path / "queue"), "JITWARM_STUB_CUBIN": str(stub),
               "JITWARM_STUB_LOG": str(log), "FAKE_DG_COMPILE_S": "5"}
    (tmp_path / "queue").mkdir()
    began = time.monotonic()
    first = call(tmp_path, "tmp-a", style, stubbed)
    assert first.wait(timeout=10) == 0, first.stdout.read()
    assert time.monotonic() - began < 4, "the stub worker waited for nvcc"
    assert (tmp_path / "tmp-a" / "kernel.cubin").read_bytes() == b"CUBIN stub" and compiles(tmp_path) == []
    key = (tmp_path / "tmp-a" / "jitwarm.key").read_text().strip()  # travels with the build directory
    assert log.read_text().split() == [key]
    request = tmp_path / "queue" / key
    assert (request / "kernel.cu").read_text() == (tmp_path / "tmp-a" / "kernel.cu").read_text()
    assert "@OUT@" in (request / "argv").read_text() and "@SRC@" in (request / "argv").read_text()
    # Once the kernel is stored, a stub worker gets the real binary (and still its key).
    built = call(tmp_path, "tmp-b", style, {**env, "FAKE_DG_COMPILE_S": "0"})
    assert built.wait(timeout=30) == 0
    again = call(tmp_path, "tmp-c", style, stubbed)
    assert again.wait(timeout=10) == 0
    assert (tmp_path / "tmp-c" / "kernel.cubin").read_bytes() == (tmp_path / "tmp-b" / "kernel.cubin").read_bytes()
    assert (tmp_path / "tmp-c" / "jitwarm.key").read_text().strip() == key and log.read_text().split() == [key, key]
