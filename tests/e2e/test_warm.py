"""`doit warm`, `doit list` and `doit info` end to end, through the stand-in deep_gemm."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import DODO, REPO, STAND_INS, Workspace, model_file

pytestmark = pytest.mark.both_layouts

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
DP8 = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + SMALL
ENTRY_NAME = {"0.1.x": r"kernel\.\w+\.[0-9a-f]+", "0.2.x": r"\w+\.[0-9a-f]{32}"}  # no kernel. prefix in 0.2.x


def warm_v3(ws: Workspace) -> None:
    model_file(ws.models, "v3", TP8 + DP8)
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def warmed(ws, template) -> Workspace:
    """`ws` with the V3 registry (TP8, and TP8 with dp-attention) warmed: one cold warm per session."""
    return ws.copy_of(template(ws.layout, "v3", warm_v3))


def markers(ws: Workspace) -> dict[str, dict]:
    found = {}
    for path in (ws.root / "jitwarm" / "markers").glob("*.json"):
        found[path.stem] = json.loads(path.read_text())
    return found


def names(ws: Workspace) -> dict[str, str]:
    """model@tpN -> full target name (hash suffix), for readable assertions."""
    return {name.rsplit("-", 1)[0] + ("/dp" if "dp" in name else ""): name for name in ws.status()}


def test_first_warm_warms_all_second_does_nothing(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    first = ws.doit("warm")
    assert first.returncode == 0, first.stdout + first.stderr
    status = ws.status()
    assert set(status.values()) == {"U"} and len(status) == 2
    compiled = ws.compiles()
    assert compiled and len(compiled) == len(set(compiled)), "an entry was compiled twice"

    second = ws.doit("warm")
    assert second.returncode == 0
    assert "queued" not in second.stdout and "warmed" not in second.stdout
    assert ws.compiles() == compiled


def test_markers_record_spec_fingerprint_entries_and_durations(ws):
    model_file(ws.models, "v3", TP8)
    assert ws.doit("warm").returncode == 0
    [marker] = markers(ws).values()
    assert marker["launch_args"] == [] and marker["tp"] == 8 and marker["hf_id"] == "deepseek-ai/DeepSeek-V3-0324"
    assert marker["fingerprint"]["deep_gemm.module"] == STAND_INS[ws.layout]
    assert marker["fingerprint"]["deep_gemm.layout"] == ws.layout
    assert len(marker["shapes"]) == 6 and marker["cache_root"] == str(ws.root)
    for name, desc in marker["entries"].items():
        assert re.fullmatch(ENTRY_NAME[ws.layout], name), name
        assert (ws.root / "cache" / name / desc["binary"]).stat().st_size == desc["size"]
        assert desc["root"] == str(ws.root)
        if ws.layout == "0.2.x":
            assert (ws.root / "cache" / name / ".committed").is_file()
    assert all(s["verification"].startswith("inotify") for s in marker["shapes"])
    assert marker["seconds"]["warm"] > 0 and marker["seconds"]["replays"] >= 0
    assert all(s["replay"]["new_entries"] == 0 for s in marker["shapes"])


def test_fingerprint_change_makes_every_target_stale(warmed):
    ws = warmed
    assert set(ws.status(DG_JIT_CPP_STANDARD="17").values()) == {"R"}
    info = ws.doit("info", next(iter(ws.status())), DG_JIT_CPP_STANDARD="17")
    assert "env.DG_JIT_CPP_STANDARD absent -> 17" in info.stdout


def test_changing_one_tuples_args_makes_only_it_stale(warmed):
    ws = warmed
    model_file(ws.models, "other", TP8)
    assert ws.doit("warm").returncode == 0
    before = ws.status()
    model_file(ws.models, "v3", TP8 + DP8.replace('"--enable-dp-attention"]',
                                                    '"--enable-dp-attention", "--attention-backend", "fa3"]'))
    after = ws.status()
    stale = [name for name, flag in after.items() if flag == "R"]
    assert len(stale) == 1 and stale[0] not in before and stale[0].startswith("warm:v3@tp8-")
    assert all(flag == "U" for name, flag in after.items() if name != stale[0])
    info = ws.doit("info", stale[0])
    assert "launch args changed" in info.stdout
    # Re-warming compiles nothing new (same shapes) and drops the superseded marker.
    n = len(ws.compiles())
    assert ws.doit("warm").returncode == 0
    assert len(ws.compiles()) == n
    assert len(markers(ws)) == 3


def test_deleted_entry_makes_only_its_targets_stale_and_info_names_it(warmed):
    ws = warmed
    by_target = {m["target"]: set(m["entries"]) for m in markers(ws).values()}
    (tp_name, tp_entries), (dp_name, dp_entries) = sorted(by_target.items(), key=lambda kv: "dp" in str(kv))
    only_dp = sorted(dp_entries - tp_entries)
    assert only_dp, "the dp-attention target must own entries of its own"
    victim = ws.root / "cache" / only_dp[0]
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()

    status = ws.status()
    stale = {n for n, flag in status.items() if flag == "R"}
    dp_target = next(n for n in status if n.endswith(dp_name))
    assert stale == {dp_target}
    info = ws.doit("info", dp_target)
    assert f"entry {only_dp[0]} missing" in info.stdout
    assert "cache root" in info.stdout and str(ws.root) in info.stdout

    before = len(ws.compiles())
    assert ws.doit("warm").returncode == 0
    # Rebuilt, or restored from the shim's store of recent builds: nothing else is compiled.
    assert set(ws.compiles()[before:]) <= {only_dp[0]}, "re-warm compiled more than the missing entry"
    assert (ws.root / "cache" / only_dp[0] / "kernel.cubin").is_file()
    assert set(ws.status().values()) == {"U"}


@pytest.mark.parametrize("part", ["completion", "kernel.cubin"])
def test_an_entry_losing_a_file_makes_exactly_its_targets_stale_and_a_rewarm_restores_it(warmed, part):
    """0.2.x: `.committed` or kernel.cubin; 0.1.x: kernel.cu or kernel.cubin."""
    ws = warmed
    by_target = {m["target"]: set(m["entries"]) for m in markers(ws).values()}
    (tp_name, tp_entries), (dp_name, dp_entries) = sorted(by_target.items(), key=lambda kv: "dp" in str(kv))
    victim = sorted(dp_entries - tp_entries)[0]
    lost = {"completion": ".committed" if ws.layout == "0.2.x" else "kernel.cu", "kernel.cubin": "kernel.cubin"}[part]
    (ws.root / "cache" / victim / lost).unlink()

    status = ws.status()
    dp_target = next(n for n in status if n.endswith(dp_name))
    assert {n for n, flag in status.items() if flag == "R"} == {dp_target}
    why = f"entry {victim} incomplete ({'no .committed' if lost == '.committed' else lost}"
    stale = ws.doit("stale", cwd=REPO)
    assert stale.returncode == 1 and f"stale {dp_name}: {why}" in stale.stdout, stale.stdout + stale.stderr
    assert why in ws.doit("info", dp_target).stdout

    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"removed broken entry {victim}" in out.stdout
    assert (ws.root / "cache" / victim / lost).is_file()
    assert set(ws.status().values()) == {"U"}
    assert ws.doit("stale", cwd=REPO).returncode == 0


def test_shared_entry_deletion_makes_all_users_stale(warmed):
    ws = warmed
    shared = set.intersection(*(set(m["entries"]) for m in markers(ws).values()))
    transpose = next(name for name in shared if "transpose" in name)
    for f in (ws.root / "cache" / transpose).iterdir():
        f.write_bytes(b"")  # truncated binary: present but incomplete
    assert set(ws.status().values()) == {"R"}


def test_two_targets_sharing_shapes_compile_them_once(ws):
    model_file(ws.models, "a", TP8)
    model_file(ws.models, "b", '[[launch]]\ntp = 8\nargs = ["--attention-backend", "fa3"]\n' + SMALL)
    out = ws.doit("warm")
    assert out.returncode == 0
    assert out.stdout.count("warmed ") == 6  # six shapes, not twelve
    assert len(ws.compiles()) == len(set(ws.compiles()))
    assert len(markers(ws)) == 2


@pytest.mark.one_layout
def test_crash_in_one_model_fails_only_its_target(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    out = ws.doit("warm", FAKE_DG_CRASH_ON="7168x16384")  # only in the dp-attention plan
    assert out.returncode == 1, out.stdout + out.stderr
    assert "worker killed by SIGABRT" in out.stdout + out.stderr
    assert "CUDA error: an illegal memory access" in out.stdout + out.stderr
    assert "UnmetDependency" not in out.stdout + out.stderr
    status = ws.status()
    assert sorted(status.values()) == ["R", "U"]
    stale = next(name for name, flag in status.items() if flag == "R")
    info = ws.doit("info", stale)
    assert "last warm failed: compile worker killed by SIGABRT" in info.stdout


def test_parallel_workers_attribute_entries_exactly(warmed, tmp_path_factory):
    ws = warmed
    sequential = {name: set(m["entries"]) for name, m in markers(ws).items()}

    parallel_ws = Workspace(tmp_path_factory.mktemp("parallel"), ws.layout)
    model_file(parallel_ws.models, "v3", TP8 + DP8)
    out = parallel_ws.doit("-n", "4", "warm", FAKE_DG_COMPILE_S="0.2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "`doit warm` without -n is faster" in out.stdout  # each doit process ran its own pool
    assert {name: set(m["entries"]) for name, m in markers(parallel_ws).items()} == sequential


@pytest.mark.one_layout
def test_hang_times_out_and_leaves_no_process(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    token = f"jitwarm-test-{time.time_ns()}"
    out = ws.doit("warm", FAKE_DG_HANG_ON="32768x512", FAKE_DG_TOKEN=token, JITWARM_SHAPE_TIMEOUT_S="3")
    assert out.returncode == 1
    assert "timed out after" in out.stdout + out.stderr
    assert sorted(ws.status().values()) == ["R", "U"]
    assert not [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


def test_interrupted_run_keeps_finished_markers(ws):
    model_file(ws.models, "a", TP8)
    model_file(ws.models, "b", DP8)
    # One replay at a time, each taking a while: target a commits well before target b.
    report = ws.tmp / "report.json"
    env = {**ws.env, "JITWARM_JOBS": "1", "FAKE_DG_REPLAY_S": "0.6", "JITWARM_REPORT_JSON": str(report)}
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not markers(ws) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert markers(ws), "the first target never finished"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    finished = markers(ws)
    assert len(finished) == 1
    # Regression: a target whose marker was written is rebuilt, in the console and the report alike
    # (it was counted as failed, "not finished", because doit's own task end never came).
    totals = json.loads(report.read_text())["totals"]
    assert (totals["rebuilt"], totals["failed"]) == (1, 1), totals
    assert "jitwarm: 1 rebuilt, 0 partial, 0 up to date, 1 failed;" in out, out
    assert "interrupted by SIGTERM: 1 target not finished, counted as failed" in out, out
    assert not ws.pool_processes()
    assert not list((ws.root / "jitwarm" / "staging").glob("*")), "staging views must be cleaned up"
    status = ws.status()
    assert sorted(status.values()) == ["R", "U"]
    assert ws.doit("warm").returncode == 0
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_selecting_targets_by_name_and_wildcard(ws):
    model_file(ws.models, "alpha", TP8)
    model_file(ws.models, "beta", DP8)
    out = ws.doit("warm:alpha*")
    assert out.returncode == 0
    status = ws.status()
    assert {n.split("@")[0]: f for n, f in status.items()} == {"warm:alpha": "U", "warm:beta": "R"}


@pytest.mark.one_layout
def test_bad_registry_file_fails_alone(ws):
    model_file(ws.models, "good", TP8)
    (ws.models / "bad.toml").write_text('hf_id = "x/y"\nconfig = {}\n[[launch]]\ntp = "8"\n')
    listing = ws.doit("list", "--status", "--all")
    assert "warm:bad@invalid" in listing.stdout
    assert 'bad.toml: launch[0].tp: expected a positive integer, got "8"' in listing.stdout
    out = ws.doit("warm")
    assert out.returncode == 1
    assert 'launch[0].tp: expected a positive integer, got "8"' in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert ws.status()[next(n for n in ws.status() if n.startswith("warm:good@"))] == "U"


@pytest.mark.one_layout
def test_unknown_architecture_goes_to_the_fallback_path(ws):
    (ws.models / "mimo.toml").write_text(
        'hf_id = "stepfun-ai/Step-3.5-Flash"\nconfig = {architectures = ["Step3p5ForCausalLM"]}\n'
        '[[launch]]\ntp = 4\n')
    listing = ws.doit("list", "--all")
    assert "fallback via sglang.compile_deep_gemm (config.architectures" not in listing.stdout
    assert "fallback via sglang.compile_deep_gemm (no shape plan; needs the fallback path" in listing.stdout


@pytest.mark.one_layout
def test_without_deep_gemm_each_stale_target_fails_in_one_line(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    out = ws.doit("warm", JITWARM_DEEP_GEMM_MODULE="no_such_deep_gemm")
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    failures = [line for line in text.splitlines() if "no_such_deep_gemm is not installed" in line]
    assert len(failures) == 2, text  # one line per target
    assert ws.doit("list").returncode == 0
    assert ws.doit("info", next(iter(ws.status()))).returncode == 1  # stale -> 1, but it runs


@pytest.mark.one_layout
def test_list_shows_status_by_default_from_the_repo_root(ws):
    model_file(ws.models, "v3", TP8)
    out = subprocess.run([sys.executable, "-m", "doit", "list"], cwd=REPO, env=ws.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("R warm:v3@tp8-") for line in out.stdout.splitlines())


@pytest.mark.one_layout
def test_config_from_the_local_hugging_face_cache(ws):
    """config_source = "hf-cache" reads config.json offline from the HF cache layout."""
    import tomllib

    config = tomllib.loads((REPO / "models" / "deepseek-v3-0324.toml").read_text())["config"]
    repo = ws.tmp / "hf" / "models--org--cached-v3"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))
    (ws.models / "cached.toml").write_text('hf_id = "org/cached-v3"\nconfig_source = "hf-cache"\n'
                                          "[[launch]]\ntp = 8\n" + SMALL)
    (ws.models / "absent.toml").write_text('hf_id = "org/not-downloaded"\nconfig_source = "hf-cache"\n'
                                          "[[launch]]\ntp = 8\n")
    listing = ws.doit("list", "--all", HF_HUB_CACHE=str(ws.tmp / "hf"), HF_HUB_OFFLINE="1")
    assert "org/cached-v3 tp8: 6 shapes, planned" in listing.stdout
    assert ("fallback via sglang.compile_deep_gemm (config.json for org/not-downloaded is not in the local "
            "Hugging Face cache)") in listing.stdout


def test_a_read_only_root_that_holds_every_kernel_needs_no_compile(warmed):
    """DG_JIT_CACHE_DIR=<new>:<old> (0.2.x) with <old> complete: 0 compiles, all up to date,
    each marker entry names <old>, and `doit info` prints both roots. 0.1.x has one root."""
    ws = warmed
    old, new = ws.root, ws.tmp / "new"
    if ws.layout == "0.1.x":  # deep_gemm 0.1.x takes the value as one path, ':' and all
        info = ws.doit("info", next(iter(ws.status())), DG_JIT_CACHE_DIR=f"{new}:{old}")
        assert f"'cache roots': {new}:{old} (writable; DG_JIT_CACHE_DIR" in info.stdout
        assert "read-only" not in info.stdout
        return
    compiled = len(ws.compiles())
    out = ws.doit("warm", DG_JIT_CACHE_DIR=f"{new}:{old}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(ws.compiles()) == compiled, "a kernel present in the read-only root was compiled"
    assert set(ws.status(DG_JIT_CACHE_DIR=f"{new}:{old}").values()) == {"U"}
    assert not list((new / "cache").glob("*")), "entries of the read-only root were copied into the writable one"
    for marker in (json.loads(p.read_text()) for p in (new / "jitwarm" / "markers").glob("*.json")):
        assert {d["root"] for d in marker["entries"].values()} == {str(old)}
    info = ws.doit("info", next(iter(ws.status())), DG_JIT_CACHE_DIR=f"{new}:{old}")
    assert f"'cache roots': {new} (writable; DG_JIT_CACHE_DIR; sglang not installed), then {old} (read-only)" \
        in info.stdout
    assert "'cache layout': sgl-deep-gemm 0.2.x DeepJIT" in info.stdout


def test_a_marker_with_a_wrong_field_type_is_stale_and_repaired(warmed):
    """Records are read as their types (tasks/state/schema.py): valid JSON of the wrong shape is stale, not a crash."""
    ws = warmed
    path = next((ws.root / "jitwarm" / "markers").glob("*.json"))
    marker = json.loads(path.read_text())
    marker["entries"] = {name: {"binary": "kernel.cubin", "size": "large"} for name in marker["entries"]}
    path.write_text(json.dumps(marker))
    name = f"warm:{path.stem}"
    assert ws.status()[name] == "R"
    assert "marker invalid (Expected `int`, got `str`" in ws.doit("info", name).stdout
    out = ws.doit("warm")
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert set(ws.status().values()) == {"U"}


def test_block32_checkpoint_and_bf16_router_warm_their_own_kernel_types(ws):
    """Through the stand-ins: sgl-deep-gemm 0.1.2 on the H200 has no SM90 kernel for [32, 32]
    blocks (tests/e2e/test_gpu.py), so a planned BLOCK32 target is proven here end to end."""
    header = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]
    model_file(ws.models, "v3-b32", TP8 + 'env = { SGLANG_OPT_BF16_FP32_GEMM_ALGO = "deep_gemm" }\n',
               header=header.replace("weight_block_size = [128, 128]", "weight_block_size = [32, 32]"))
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    [marker] = markers(ws).values()
    kinds = sorted({(s["kind"], s["n"], s["k"]) for s in marker["shapes"] if s["entries"]})
    assert [k for k in kinds if k[0] == "GEMM_NT_BF16BF16F32"] == [("GEMM_NT_BF16BF16F32", 256, 7168)]
    assert {k[0] for k in kinds} == {"GEMM_NT_F8F8BF16_BLOCK32", "GEMM_NT_BF16BF16F32"} and len(kinds) == 7
    # The stand-ins name BLOCK32 kernels sm90_fp8_gemm_1d1d, as DeepGEMM's own family (tests/fakes/fake_kernels.py).
    families = {family for family in ("sm90_fp8_gemm_1d1d", "sm90_fp8_gemm_1d2d", "sm90_bf16_gemm")
                if any(family in name for name in ws.compiles())}
    assert families == {"sm90_fp8_gemm_1d1d", "sm90_bf16_gemm"}
