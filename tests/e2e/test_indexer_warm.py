"""The DSA indexer end to end through the stand-ins, on both cache layouts: a DSA model's warm builds its
indexer kernels (DeepJIT names on 0.2.x) in the same pool as its GEMMs, markers and staleness
cover them, and `doit env` keeps the start-up sweep while anything is not warmed."""

import json
import re
import shutil
import sys

import pytest
from conftest import REPO, model_file, plain_doit

pytestmark = pytest.mark.both_layouts

# The registry's V3.2 (config embedded) at two GEMM M values; the indexer's rows are its own.
V32 = (REPO / "models" / "deepseek-v3.2.toml").read_text().split("[[launch]]")[0]
LAUNCH = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 4096]\n'
FAMILIES = {"0.1.x": r"kernel\.smxx_(fp8_mqa_logits|fp8_paged_mqa_logits|paged_mqa_logits_metadata)\.[0-9a-f]+",
            "0.2.x": r"sm90_(fp8_mqa_logits|fp8_paged_mqa_logits|paged_mqa_logits_metadata)\.[0-9a-f]{32}"}



def test_indexer_kernels_warm_beside_the_gemms_and_count_in_the_marker(ws):
    model_file(ws.models, "v32", LAUNCH, header=V32)
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    shapes = {s["kind"]: s for s in marker["shapes"] if "MQA" in s["kind"]}
    assert set(shapes) == {"FP8_MQA_LOGITS", "FP8_PAGED_MQA_LOGITS"}
    paged = shapes["FP8_PAGED_MQA_LOGITS"]
    assert (paged["n"], paged["k"], paged["groups"], paged["m_count"]) == (64, 128, 1, 52)
    assert paged["replay"]["new_entries"] == 0
    indexer = sorted(n for n in marker["entries"] if "mqa_logits" in n)
    assert all(re.fullmatch(FAMILIES[ws.layout], n) for n in indexer), indexer
    # One logits kernel, and a schedule per 32 rows up to 512 (16), chunks of 132 rows included.
    assert sum("metadata" in n for n in indexer) == 16 and sum("metadata" not in n for n in indexer) == 2
    assert set(indexer) <= set(paged["entries"]) | set(shapes["FP8_MQA_LOGITS"]["entries"])

    # A lost schedule kernel makes the target stale, and the rewarm puts it back.
    victim = next(n for n in indexer if "metadata" in n)
    shutil.rmtree(ws.root / "cache" / victim)
    assert set(ws.status().values()) == {"R"}
    again = ws.doit("warm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (ws.root / "cache" / victim / "kernel.cubin").is_file() and set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_env_keeps_the_sweep_while_a_start_still_compiles_something(ws):
    model_file(ws.models, "v32", LAUNCH, header=V32)
    assert ws.doit("warm").returncode == 0
    out = plain_doit(ws, "env")
    assert out.returncode == 0, out.stderr
    assert "SGLANG_JIT_DEEPGEMM_PRECOMPILE" not in out.stdout
    assert "not warmed: indexer.wq_b 8192x1536 on half the SMs" in out.stderr


@pytest.mark.one_layout
def test_glm5_plans_nothing_it_cannot_warm_so_env_turns_the_sweep_off_once_warm(ws):
    glm = (REPO / "models" / "glm-5-fp8.toml").read_text().split("[[launch]]")[0]
    model_file(ws.models, "glm", LAUNCH, header=glm)
    plan = plain_doit(ws, "plan")
    assert plan.returncode == 0, plan.stderr
    assert "  not warmed: none" in plan.stdout and "FP8_PAGED_MQA_LOGITS heads=32 head_dim=128" in plan.stdout
    assert ws.doit("warm").returncode == 0
    out = plain_doit(ws, "env")
    assert out.returncode == 0, out.stderr
    assert "export SGLANG_JIT_DEEPGEMM_PRECOMPILE=0" in out.stdout.splitlines(), out.stdout + out.stderr


def test_indexer_shapes_push_and_pull_through_the_remote_like_gemm_shapes(ws):
    model_file(ws.models, "v32", LAUNCH, header=V32)
    remote = f"file://{ws.tmp / 'remote'}"
    first = ws.doit("warm", JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE="read-write",
                    JITWARM_REPORT_JSON=str(ws.tmp / "push.json"))
    assert first.returncode == 0, first.stdout + first.stderr
    shapes = len(json.loads((ws.tmp / "push.json").read_text())["targets"][0]["shapes"])
    compiled = len(ws.compiles())
    # Another runner: an empty root pulls every shape, the indexer's included, and builds nothing.
    ws.root = ws.tmp / "runner-b"
    ws.env.update(DG_JIT_CACHE_DIR=str(ws.root), JITWARM_DOIT_DB=str(ws.tmp / "runner-b.db"))
    out = ws.doit("warm", JITWARM_REMOTE=remote, JITWARM_REPORT_JSON=str(ws.tmp / "pull.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((ws.tmp / "pull.json").read_text())
    assert data["totals"]["remote"]["hits"] == shapes and len(ws.compiles()) == compiled
    pulled = {s["name"].split("-")[0] for t in data["targets"] for s in t["shapes"] if s["remote"] == "hit"}
    assert {"mqa_logits", "paged_mqa_logits"} <= pulled
    assert any("paged_mqa_logits_metadata" in p.name for p in (ws.root / "cache").iterdir())


def test_watch_names_an_indexer_kernel_a_command_compiled_and_record_plans_it(warmed_tp8):
    ws = warmed_tp8
    [target] = list(ws.status())
    server = [sys.executable, str(REPO / "tests" / "fakes" / "fake_server.py"), "FP8_PAGED_MQA_LOGITS:64:128:1:4"]
    report = ws.tmp / "watch.json"
    out = plain_doit(ws, "watch", "--record", target.removeprefix("warm:"), "--", *server,
                     JITWARM_WATCH_REPORT_JSON=str(report))
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    shapes = sorted(e["shape"] or "" for e in data["entries"])
    # The logits kernel names its shape; the schedule kernel (no heads) is reported without one.
    assert shapes == ["", "FP8_PAGED_MQA_LOGITS N=64 K=128 num_groups=1"], data["entries"]
    assert data["recorded"]["added"] == ["FP8_PAGED_MQA_LOGITS N=64 K=128 num_groups=1"]
    plan = plain_doit(ws, "plan", target.removeprefix("warm:"))
    assert any("FP8_PAGED_MQA_LOGITS heads=64" in line and line.endswith("(from doit watch)")
               for line in plan.stdout.splitlines()), plan.stdout
    assert ws.doit("warm").returncode == 0 and ws.status()[target] == "U"
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    [paged] = [s for s in marker["shapes"] if s["kind"] == "FP8_PAGED_MQA_LOGITS"]
    assert paged["m_count"] == 1 and any("metadata" in n for n in paged["entries"])


@pytest.mark.one_layout
def test_plan_shows_what_the_last_warm_built_in_place_of_the_estimate(ws):
    model_file(ws.models, "v32", LAUNCH, header=V32)

    def plan():
        out = plain_doit(ws, "plan")
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    before = plan()
    paged = next(line for line in before if "FP8_PAGED_MQA_LOGITS" in line)
    assert "~17 kernels" in paged and not any(line.startswith("  last warm:") for line in before)
    assert ws.doit("warm").returncode == 0
    after = plan()
    paged = next(line for line in after if "FP8_PAGED_MQA_LOGITS" in line)
    assert paged.endswith("17 entries at its last warm"), paged  # one logits kernel + 16 schedules
    [last] = [line for line in after if line.startswith("  last warm:")]
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    assert last.startswith(f"  last warm: {len(marker['entries'])} distinct entries for 12 of 12 shapes")

