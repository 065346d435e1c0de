"""A warm on N simulated GPUs (an nvidia-smi stand-in, tests/fakes/smi): workers and replays
are spread over all of them, each GPU holds only what its memory allows, and the cache and
markers come out the same as on one GPU."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

from conftest import FAKES, Workspace, model_file

pytestmark = pytest.mark.both_layouts

LAUNCH = "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"


def warm_on(ws: Workspace, gpus: str, **env) -> dict[str, set[str]]:
    """Warm V3 on the simulated GPUs `gpus` (free MiB each); {compile|replay: the GPUs its processes saw}."""
    model_file(ws.models, "v3", LAUNCH)
    log = ws.tmp / "devices.log"
    out = ws.doit("warm", FAKE_GPUS=gpus, FAKE_DG_DEVICE_LOG=str(log),
                  PATH=f"{FAKES / 'smi'}{os.pathsep}{os.environ['PATH']}", **env)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = defaultdict(set)
    for line in log.read_text().splitlines():
        who, _, device, *_ = line.split()
        seen[who].add(device)
    return seen


def result(ws: Workspace) -> tuple[set[str], dict]:
    entries = {p.name for p in (ws.root / "cache").iterdir()}
    markers = {}
    for path in (ws.root / "jitwarm" / "markers").glob("*.json"):
        marker = json.loads(path.read_text())
        markers[path.stem] = sorted((s["kind"], s["n"], s["k"], s["groups"], tuple(sorted(s["entries"])))
                                    for s in marker["shapes"])
    return entries, markers


def test_workers_and_replays_spread_over_every_gpu_with_the_same_result_as_one(tmp_path, layout):
    (tmp_path / "two").mkdir()
    many = Workspace(tmp_path / "two", layout)
    # Replays that take a while overlap, so the second one finds the first GPU busier.
    seen = warm_on(many, "81920,81920", JITWARM_JOBS="2", FAKE_DG_REPLAY_S="0.2")
    assert seen["compile"] == {"0", "1"} and seen["replay"] == {"0", "1"}, seen

    (tmp_path / "one").mkdir()
    single = Workspace(tmp_path / "one", layout)
    assert warm_on(single, "81920", JITWARM_JOBS="2") == {"compile": {"0"}, "replay": {"0"}}
    assert result(many) == result(single)


@pytest.mark.one_layout
def test_a_gpu_without_room_for_a_worker_gets_none(ws):
    # GPU 1 has less free memory than the 4 GiB margin: every process runs on GPU 0.
    seen = warm_on(ws, "81920,2048", JITWARM_JOBS="2")
    assert seen["compile"] == {"0"} and seen["replay"] == {"0"}


@pytest.mark.one_layout
def test_cuda_visible_devices_is_respected(ws):
    seen = warm_on(ws, "81920,81920,81920", CUDA_VISIBLE_DEVICES="2,0", JITWARM_JOBS="2")
    assert seen["compile"] == {"2", "0"} and seen["replay"] <= {"2", "0"}
