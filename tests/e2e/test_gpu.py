"""On a GPU host with the real deep_gemm: a warm lands kernels that a server replay reuses."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, Workspace, model_file
from tasks.plan import registry, targets

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.xdist_group("gpu"),
    pytest.mark.skipif(not shutil.which("nvidia-smi") or importlib.util.find_spec("deep_gemm") is None,
                       reason="needs an NVIDIA GPU and deep_gemm (run on the H200 device)"),
]


def real_workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    for key in ("JITWARM_DEEP_GEMM_MODULE", "JITWARM_CACHE_LAYOUT", "FAKE_DG_COMPILE_LOG", "DG_JIT_NVCC_COMPILER"):
        ws.env.pop(key)
    return ws


def warm_and_replay(tmp_path, launch: str, **env) -> dict:
    """Warm one V3 target with the real deep_gemm, check its marker, replay sglang's sweep."""
    ws = real_workspace(tmp_path)
    model_file(ws.models, "v3", launch)

    out = ws.doit("-n", "12", "warm", timeout=900, **env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    assert marker["fingerprint"]["deep_gemm.dist"] == "sgl-deep-gemm"
    # The layout is read from the installed release, not assumed.
    version = marker["fingerprint"]["deep_gemm.version"]
    assert marker["fingerprint"]["deep_gemm.layout"] == ("0.1.x" if version.startswith("0.1.") else "0.2.x")
    assert all(s["entries"] for s in marker["shapes"])
    for name, desc in marker["entries"].items():
        assert (ws.root / "cache" / name / desc["binary"]).stat().st_size == desc["size"]

    plan = tmp_path / "plan.json"
    works = [w for t in targets.expand(registry.load(ws.models), environ={}) for w in t.works]
    plan.write_text(json.dumps({"shapes": [
        {"kind": w.shape.kind.value, "n": w.shape.n, "k": w.shape.k, "groups": w.shape.groups,
         "m_values": list(w.m_values)} for w in works]}))
    replay = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                            env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.root)}, capture_output=True,
                            text=True, timeout=600)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert json.loads(replay.stdout.strip().splitlines()[-1])["new_entries"] == 0
    return marker


def test_real_warm_lands_kernels_that_replay_without_compiling(tmp_path):
    marker = warm_and_replay(tmp_path, "[[launch]]\ntp = 8\nm_list = [1, 8192]\n")
    assert len(marker["shapes"]) == 6


def test_grouped_contiguous_and_masked_kernels_warm_too_and_pull_without_compiling(tmp_path):
    launch = '[[launch]]\ntp = 8\nargs = ["--moe-a2a-backend", "deepep"]\nm_list = [128, 4096]\n'
    remote = f"file://{tmp_path / 'remote'}"
    marker = warm_and_replay(tmp_path, launch, JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE="read-write")
    kinds = {s["kind"] for s in marker["shapes"] if s["groups"] == 32}
    assert kinds == {"GROUPED_GEMM_NT_F8F8BF16_CONTIG", "GROUPED_GEMM_NT_F8F8BF16_MASKED"}

    # Another runner pulls it: the shared replay processes load every kernel, build none.
    (tmp_path / "runner-b").mkdir()
    ws = real_workspace(tmp_path / "runner-b")
    model_file(ws.models, "v3", launch)
    out = ws.doit("warm", timeout=600, JITWARM_REMOTE=remote, JITWARM_REPORT_JSON=str(ws.tmp / "report.json"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    totals = json.loads((ws.tmp / "report.json").read_text())["totals"]
    assert totals["kernels_compiled"] == 0 and totals["remote"]["hits"] == len(marker["shapes"])
    [pulled] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    assert {n: d["size"] for n, d in pulled["entries"].items()} == {n: d["size"] for n, d in marker["entries"].items()}
    assert all(shape["verification"].startswith("remote manifest") for shape in pulled["shapes"])


def test_captured_replay_still_compiles_a_missing_kernel(tmp_path):
    """The replay records launches in a CUDA graph instead of running them: it must still
    find, and build, every kernel its calls need. Delete one and replay that shape."""
    marker = warm_and_replay(tmp_path, "[[launch]]\ntp = 8\nm_list = [1, 64, 1024, 8192]\n")
    shape = next(s for s in marker["shapes"] if len(s["entries"]) > 1)
    victim = sorted(name for name in shape["entries"] if "transpose" not in name)[0]
    root = tmp_path / "cache"
    shutil.rmtree(root / "cache" / victim)
    plan = tmp_path / "replay.json"
    layout = marker["fingerprint"]["deep_gemm.layout"]
    plan.write_text(json.dumps({"cache": {"root": str(root), "layout": layout}, "staging": str(tmp_path / "view"),
                                "module": "deep_gemm",
                                "shape": {k: shape[k] for k in ("kind", "n", "k", "groups")},
                                "m_values": [1, 64, 1024, 8192], "contig_alignment": 128}))
    code = ("import sys, msgspec; from tasks.build.child import protocol, replay; "
            "plan = msgspec.json.decode(open(sys.argv[1], 'rb').read(), type=protocol.ReplayPlan); "
            "print(msgspec.json.encode(replay.run(plan)).decode())")
    out = subprocess.run([sys.executable, "-c", code, str(plan)], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["launches"].startswith("captured")
    assert result["new"] == [victim] and victim in result["entries"]
