"""Known sources through `doit warm`, on both layouts: after entries (and the shim's store) are
lost, or after a toolchain change, the kernels an earlier warm compiled are compiled again from
their recipes before the workers look; the workers then find them and the replays prove them."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts

LAUNCHES = ("[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
            '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')


@pytest.fixture(autouse=True)
def kernel_queue_on(ws):
    ws.env["JITWARM_KERNEL_QUEUE"] = "on"


def queue_note(out) -> tuple[int, int, int]:
    """(compiled by the queue, of them from known sources, known) from the pool's summary line."""
    found = re.search(r"; (\d+) of them by the kernel queue, (\d+) of (\d+) from sources known", out.stdout)
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
    # All were known; the queue compiles them from the start, though a worker's first call (it waits
    # for its kernel) may take one itself when it gets there first.
    assert known == len(lost) and from_known >= 1
    assert len(ws.compiles()) - built == len(lost)  # only what was lost, each once
    assert "replay compiled 0" in second.stdout and set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_a_change_deep_gemm_keys_kernels_by_compiles_every_known_kernel_again(ws):
    # A DG_JIT_* setting enters deep_gemm's cache key (as nvcc's version does): every kernel is keyed anew.
    model_file(ws.models, "v3", LAUNCHES)
    assert ws.doit("warm").returncode == 0
    before = len(list((ws.root / "cache").iterdir()))
    changed = ws.doit("warm", DG_JIT_CPP_STANDARD="17")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    _, from_known, known = queue_note(changed)
    assert known == before and from_known > 0
    assert "replay compiled 0" in changed.stdout
    assert set(ws.status(DG_JIT_CPP_STANDARD="17").values()) == {"U"}
