"""On a GPU host with the real deep_gemm: a warm lands kernels that a server replay reuses."""

import importlib.metadata
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
                       reason="needs an NVIDIA GPU and deep_gemm (sgl-deep-gemm 0.1.2 on an H100 or H200)"),
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
    code = ("import sys, msgspec; from tasks.runner.child import protocol, replay; "
            "plan = msgspec.json.decode(open(sys.argv[1], 'rb').read(), type=protocol.ReplayPlan); "
            "print(msgspec.json.encode(replay.run(plan)).decode())")
    out = subprocess.run([sys.executable, "-c", code, str(plan)], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["launches"].startswith("captured")
    assert result["new"] == [victim] and victim in result["entries"]


# sglang 0.5.23's _NormalWarmupExecutor (deep_gemm_wrapper/compile_utils.py:414-429), restated here
# rather than imported from jitwarm or bench/, and run over every M of the shapes given in argv.
SGLANG_NORMAL_SWEEP = """
import json, os, sys
import deep_gemm, torch
sys.path.insert(0, sys.argv[1])
from _emit import entry_names

def ceil_div(a, b):
    return (a + b - 1) // b

root = os.environ["DG_JIT_CACHE_DIR"]
before = entry_names(root)
for n, k, max_m in json.loads(sys.argv[2]):
    block = 128
    recipe = (1, block, block)
    lhs_q = torch.empty((max_m, k), device="cuda", dtype=torch.float8_e4m3fn)
    lhs_s = torch.ones((max_m, ceil_div(k, block)), device="cuda", dtype=torch.float32)
    rhs_q = torch.empty((n, k), device="cuda", dtype=torch.float8_e4m3fn)
    rhs_s = torch.ones((ceil_div(n, block), ceil_div(k, block)), device="cuda", dtype=torch.float32)
    out = torch.empty((max_m, n), device="cuda", dtype=torch.bfloat16)
    for m in range(1, max_m + 1):
        deep_gemm.fp8_gemm_nt((lhs_q[:m], lhs_s[:m]), (rhs_q, rhs_s), out[:m], recipe=recipe)
    torch.cuda.synchronize()
print(json.dumps({"new": sorted(entry_names(root) - before)}))
"""


def test_shipped_v32_warm_includes_its_unfused_shared_experts_and_sglangs_sweep_compiles_nothing(tmp_path):
    ws = real_workspace(tmp_path)
    shutil.copy(REPO / "models" / "deepseek-v3.2.toml", ws.models)
    out = ws.doit("-n", "12", "warm", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    warmed = {(s["kind"], s["n"], s["k"]): s for s in marker["shapes"]}
    for n, k in ((512, 7168), (7168, 256)):
        shape = warmed[("GEMM_NT_F8F8BF16", n, k)]
        assert shape["m_count"] == 16384 and shape["entries"], shape
    sweep = subprocess.run([sys.executable, "-c", SGLANG_NORMAL_SWEEP, str(REPO / "bench"),
                            json.dumps([[512, 7168, 16384], [7168, 256, 16384]])],
                           env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.root)}, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert json.loads(sweep.stdout.strip().splitlines()[-1])["new"] == []


def warm_one_captured_shape(tmp_path, kind, n, k, groups):
    """A target whose lock holds one shape (the planner emits the BF16 grouped types for no
    block-FP8 model); returns the workspace and `doit warm`'s result."""
    from tasks.plan import locks

    ws = real_workspace(tmp_path)
    spec = ws.models / "m.toml"
    spec.write_text('hf_id = "x/m"\nconfig = {architectures = ["Step3p5ForCausalLM"]}\n'
                    '[[launch]]\ntp = 8\nm_list = [1, 128, 1024]\n')
    launch = registry.load_file(spec).launches[0]
    capture = locks.Capture(launch=0, launch_hash=launch.hash, tp=8, args=(), captured_at="2026-12-01T00:00:00+00:00",
                            sglang="0.5.23", deep_gemm="sgl-deep-gemm", shapes=((kind, n, k, groups),))
    locks.path_for(spec).write_bytes(locks.with_capture(spec, capture))
    return ws, ws.doit("warm", timeout=600)


def replay_new_entries(ws, kind, n, k, groups) -> int:
    """bench/sglang_replay.py restates sglang 0.5.23's executor for each type."""
    m_values = [128, 1024] if kind.endswith("_CONTIG") else [1, 128, 1024]
    plan = ws.tmp / "plan.json"
    plan.write_text(json.dumps({"shapes": [{"kind": kind, "n": n, "k": k, "groups": groups, "m_values": m_values}]}))
    replay = subprocess.run([sys.executable, str(REPO / "bench" / "sglang_replay.py"), str(plan)],
                            env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.root)}, capture_output=True, text=True,
                            timeout=600)
    assert replay.returncode == 0, replay.stderr[-3000:]
    return json.loads(replay.stdout.strip().splitlines()[-1])["new_entries"]


@pytest.mark.parametrize("kind, n, k, groups", [
    ("GEMM_NT_BF16BF16F32", 256, 7168, 1),
    ("GROUPED_GEMM_NT_BF16_CONTIG", 4096, 7168, 8),
    ("GROUPED_GEMM_NT_BF16_MASKED", 4096, 7168, 8),
])
def test_each_bf16_kernel_type_warms_one_shape_that_sglangs_executor_replays(tmp_path, kind, n, k, groups):
    ws, out = warm_one_captured_shape(tmp_path, kind, n, k, groups)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    [shape] = marker["shapes"]
    assert (shape["kind"], shape["n"], shape["k"], shape["groups"]) == (kind, n, k, groups) and shape["entries"]
    assert replay_new_entries(ws, kind, n, k, groups) == 0


def test_block32_warms_where_deep_gemm_has_the_kernel_and_fails_in_its_own_words_where_not(tmp_path):
    kind, n, k = "GEMM_NT_F8F8BF16_BLOCK32", 2112, 7168
    ws, out = warm_one_captured_shape(tmp_path, kind, n, k, 1)
    if importlib.metadata.version("sgl-deep-gemm").startswith("0.1."):
        # sgl-deep-gemm 0.1.2 has no SM90 path for recipe (1, 32, 32): its layout check refuses the
        # [32, 32] scales. The target fails, names the shape, and keeps DeepGEMM's reason.
        text = out.stdout + out.stderr
        assert out.returncode == 1 and "Unknown SF transformation" in text, text[-3000:]
        assert "failed m@tp8-" in text and f"{kind} N={n} K={k}" in text, text[-3000:]
        assert not list((ws.root / "jitwarm" / "markers").glob("*.json"))
        return
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert replay_new_entries(ws, kind, n, k, 1) == 0


def test_watch_names_a_shape_the_warm_missed_and_record_closes_it(tmp_path):
    """On a GPU: bench/watch_missed_shape.py, with sglang's own executor restated."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "watch_missed_shape.py"), "--work", str(tmp_path / "w"),
                          "--out", str(tmp_path / "result.json")], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    watched = result["steps"]["watch"]
    assert result["missed"] in watched["missed_shapes"], watched
    assert any(e["n"] == 4096 and e["k"] == 7168 and e["groups"] == 32 for e in watched["entries"]), watched
    assert result["acceptance"]["all"], result["acceptance"]


def test_dsa_indexer_kernels_warm_and_sglangs_indexer_calls_compile_nothing(tmp_path):
    """A V3.2 and a GLM-5 target warm their indexer's MQA-logits kernels beside
    their GEMMs; bench/indexer_replay.py, which restates sglang 0.5.23's indexer calls and
    shares no code with the warmer, then builds nothing over that root."""
    ws = real_workspace(tmp_path)
    for name in ("deepseek-v3.2", "glm-5-fp8"):
        text = (REPO / "models" / f"{name}.toml").read_text()
        # The GEMMs at two M values only: this test is about the indexer.
        (ws.models / f"{name}.toml").write_text(text.replace('args = ["--dp", "8", "--enable-dp-attention"]',
                                                             'args = ["--dp", "8", "--enable-dp-attention"]\n'
                                                             'm_list = [1, 4096]'))
    out = ws.doit("warm", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    markers = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    assert len(markers) == 2
    for marker in markers:
        indexer = {s["kind"]: s for s in marker["shapes"] if "MQA_LOGITS" in s["kind"]}
        assert set(indexer) == {"FP8_MQA_LOGITS", "FP8_PAGED_MQA_LOGITS"}, marker["shapes"]
        assert all(s["entries"] for s in indexer.values())
    names = {name for m in markers for name in m["entries"]}
    assert any("paged_mqa_logits_metadata" in name for name in names), sorted(names)
    replay = subprocess.run([sys.executable, str(REPO / "bench" / "indexer_replay.py"), "64", "32", "--tp", "8"],
                            env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.root)}, capture_output=True, text=True,
                            timeout=600)
    assert replay.returncode == 0, replay.stderr[-3000:]
    result = json.loads(replay.stdout.strip().splitlines()[-1])
    assert result["calls"] > 100 and result["new_entries"] == 0, result
