"""`doit stale` (a CI gate) and `doit plan`, run as plain doit commands from the repo root."""

from __future__ import annotations

import shlex
import subprocess

from conftest import REPO, model_file, plain_doit
from tasks.plan import mlists, planner, registry

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
DP8 = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + SMALL


def test_stale_exits_1_with_reasons_then_0_once_warm(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    before = plain_doit(ws, "stale")
    assert before.returncode == 1, before.stdout + before.stderr
    assert before.stdout.count("not warmed yet (no marker)") == 2
    assert "2 of 2 targets stale" in before.stdout
    assert ws.doit("warm").returncode == 0
    after = plain_doit(ws, "stale")
    assert after.returncode == 0, after.stdout
    assert "0 of 2 targets stale" in after.stdout
    # One entry gone: stale again, naming it.
    entry = next((ws.root / "cache").iterdir())
    for child in entry.iterdir():
        child.unlink()
    entry.rmdir()
    again = plain_doit(ws, "stale")
    assert again.returncode == 1 and f"entry {entry.name} missing" in again.stdout


def test_stale_selects_targets_and_rejects_unknown_ones(ws):
    model_file(ws.models, "v3", TP8)
    model_file(ws.models, "other", DP8)  # a shape v3 does not have: warming v3 leaves it stale
    assert ws.doit(next(n for n in ws.status() if n.startswith("warm:v3"))).returncode == 0
    assert plain_doit(ws, "stale", "v3").returncode == 0
    assert plain_doit(ws, "stale", "other").returncode == 1
    assert plain_doit(ws, "stale").returncode == 1
    unknown = plain_doit(ws, "stale", "nope")
    assert unknown.returncode == 3 and "unknown target 'nope'" in unknown.stderr
    bad = plain_doit(ws, "stale", "--shard", "0/2")
    assert bad.returncode == 3 and "--shard: expected i/N" in bad.stderr


def test_plan_lists_the_planners_shapes_for_deepseek_v3(ws):
    shipped = registry.load_file(REPO / "models" / "deepseek-v3-0324.toml")
    launch = shipped.launches[0]
    expected = planner.plan(shipped.config, launch.flags).shapes
    m_count = len(mlists.policy(launch.flags, False, launch.m_list).values())
    out = plain_doit(ws, "plan", "deepseek-v3-0324", JITWARM_MODELS_DIR=str(REPO / "models"))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    shape_lines = [line.split() for line in lines if line.startswith("    ")]
    listed = [(fields[1], int(fields[2][2:]), int(fields[3][2:]), int(fields[4][7:])) for fields in shape_lines]
    assert listed == [(s.kind.value, s.n, s.k, s.groups) for s in expected]
    assert {fields[5] for fields in shape_lines} == {f"M={m_count}"}
    assert "  path: planned" in lines
    assert f"  shapes: {len(expected)}" in lines
    assert any(line.startswith("  estimate: ~") and "kernels" in line for line in lines)


def test_plan_shows_fallback_targets_without_a_gpu(ws):
    # A launch of a planned model can still ask for server truth.
    shipped = (REPO / "models" / "mimo-v2.5.toml").read_text()
    (ws.models / "mimo-v2.5.toml").write_text(shipped.replace('tags = ["per-commit-8-gpu-h200"]', 'path = "fallback"'))
    out = plain_doit(ws, "plan", "mimo-v2.5")
    assert out.returncode == 0, out.stderr
    assert "  path: fallback" in out.stdout
    assert "shapes: unknown until the server reports them" in out.stdout
    assert "-m sglang.compile_deep_gemm --model-path XiaomiMiMo/MiMo-V2.5" in out.stdout


def test_plan_explain_names_the_rules_behind_each_shape(ws):
    out = plain_doit(ws, "plan", "--explain", "deepseek-v3.2", JITWARM_MODELS_DIR=str(REPO / "models"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    shape = next(i for i, line in enumerate(lines) if "GEMM_NT_F8F8BF16 N=512 K=7168 " in line)
    assert lines[shape + 1].startswith("      why: shared_experts gate_up_proj (not fused: DeepseekV32ForCausalLM")
    assert "  not on DeepGEMM: routed experts: runner auto with none all-to-all is not DeepGEMM" in out.stdout
    paged = next(i for i, line in enumerate(lines) if "FP8_PAGED_MQA_LOGITS heads=64 head_dim=128 next_n=1" in line)
    assert "  rows=52  " in lines[paged]
    assert lines[paged + 1].startswith("      why: indexer decode fp8_paged_mqa_logits + get_paged_mqa_logits_metadata")
    assert any("FP8_MQA_LOGITS heads=64 head_dim=128 next_n=1  lengths=3" in line for line in lines)
    # The plan ends with what a start still compiles, then what is compiled later.
    estimate = next(i for i, line in enumerate(lines) if line.startswith("  estimate:"))
    assert lines[estimate + 1].startswith("  not warmed: indexer.wq_b 8192x1536 on half the SMs")
    assert lines[estimate + 2].startswith("  at run time: indexer decode schedule for batches above")
    plain = plain_doit(ws, "plan", "deepseek-v3.2", JITWARM_MODELS_DIR=str(REPO / "models"))
    assert "why:" not in plain.stdout and "  not warmed: indexer.wq_b" in plain.stdout

def test_env_turns_the_start_up_sweep_off_only_for_proven_targets(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    before = plain_doit(ws, "env")
    assert before.returncode == 0, before.stderr
    root = shlex.quote(str(ws.root))
    assert f"export SGLANG_DG_CACHE_DIR={root}" in before.stdout.splitlines()
    assert f"export DG_JIT_CACHE_DIR={root}" in before.stdout.splitlines()
    assert "PRECOMPILE" not in before.stdout
    assert before.stderr.count("jitwarm: SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 left out: v3@tp8-") == 2
    assert "not warmed yet" in before.stderr

    v3_tp8 = next(n for n in ws.status() if "dp" not in n and n.startswith("warm:v3@"))
    assert ws.doit(v3_tp8).returncode == 0
    one = plain_doit(ws, "env", v3_tp8)
    assert one.stdout.splitlines()[-1] == "export SGLANG_JIT_DEEPGEMM_PRECOMPILE=0" and not one.stderr
    assert "PRECOMPILE" not in plain_doit(ws, "env").stdout  # the dp-attention target is still cold
    # The printed lines are shell: a server started under them sees the warmed root.
    shown = subprocess.run(["bash", "-c", 'eval "$1"; echo "$SGLANG_DG_CACHE_DIR|$SGLANG_JIT_DEEPGEMM_PRECOMPILE"',
                            "-", one.stdout], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == f"{ws.root}|0"


def test_env_says_sglang_0_5_23_ignores_the_per_process_cache_variable(ws):
    """sglang 0.5.23 sets DG_JIT_CACHE_DIR from SGLANG_DG_CACHE_DIR alone (deep_gemm_wrapper/compile_utils.py:51):
    a per-process subdirectory (sglang#27604) is not made, so the server reads the root printed."""
    model_file(ws.models, "v3", TP8)
    out = plain_doit(ws, "env", SGLANG_DG_CACHE_DIR_PER_PROCESS="1")
    assert out.returncode == 0, out.stderr
    assert "SGLANG_DG_CACHE_DIR_PER_PROCESS is set, but sglang 0.5.23 does not read it" in out.stderr
    assert f"export SGLANG_DG_CACHE_DIR={shlex.quote(str(ws.root))}" in out.stdout.splitlines()
    assert "PER_PROCESS" not in plain_doit(ws, "env").stderr
