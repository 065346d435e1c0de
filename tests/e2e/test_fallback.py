"""Fallback warm through a stand-in `sglang.compile_deep_gemm`: supervision, capture, locks."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, Workspace, cache, model_file
from tasks.plan import locks
from tasks.state import entries

pytestmark = pytest.mark.both_layouts

# An architecture the planner has no rules for (sglang serves it; jitwarm warms it through the server).
MIMO = 'hf_id = "stepfun-ai/Step-3.5-Flash"\nconfig = {architectures = ["Step3p5ForCausalLM"]}\n'
M_LIST = "m_list = [1, 32, 128, 1024]\n"


def mimo(ws: Workspace, mode: str, timeout: int = 60, extra_args: str = "", env: str = "") -> None:
    (ws.models / "mimo.toml").write_text(
        MIMO + f'[[launch]]\ntp = 4\nargs = ["--dp", "2", "--enable-dp-attention", "--served-model-name", "fake-mode:{mode}"'
        f'{extra_args}]\n' + M_LIST + f"fallback_timeout_s = {timeout}\n" + env)


@pytest.fixture
def fws(ws):
    ws.env.update({"JITWARM_COMPILE_MODULE": "fake_compile_deep_gemm",
                   "FAKE_CDG_RAN_LOG": str(ws.tmp / "server-runs.log"),
                   "FAKE_DG_TOKEN": f"jitwarm-fallback-{time.time_ns()}"})
    return ws


def server_runs(ws) -> int:
    path = ws.tmp / "server-runs.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def survivors(ws) -> list[psutil.Process]:
    token = ws.env["FAKE_DG_TOKEN"]
    return [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


def marker(ws) -> dict:
    [path] = (ws.root / "jitwarm" / "markers").glob("mimo@*.json")
    return json.loads(path.read_text())


def test_the_server_runs_with_the_launch_env_that_planning_assumed(fws):
    mimo(fws, "empty", env='env = {SGLANG_USE_DEEPGEMM_BMM = "1"}\n')
    out = fws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (fws.tmp / "server-runs.log").read_text().rstrip().endswith("[env SGLANG_USE_DEEPGEMM_BMM=1]")


def test_success_captures_a_lock_and_prints_the_tail(fws):
    mimo(fws, "ok")
    out = fws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    [name] = fws.status()
    label = name.removeprefix("warm:")
    assert f"[{label}] | [2026-11-22 10:00:00 TP0] The server is fired up and ready to roll!" in out.stdout
    assert f"[{label}] fallback: " in out.stdout and "--model-path stepfun-ai/Step-3.5-Flash --tp 4" in out.stdout

    [capture] = locks.read(fws.models / "mimo.toml").values()
    assert capture.shapes == (("GEMM_NT_F8F8BF16", 2112, 7168, 1), ("GEMM_NT_F8F8BF16", 7168, 2048, 1),
                              ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32))
    assert capture.tp == 4 and "fake-mode:ok" in capture.args
    text = locks.path_for(fws.models / "mimo.toml").read_text()
    assert "GEMM_NT_F8F8BF16 N=2112 K=7168 num_groups=1" in text  # human-readable

    m = marker(fws)
    assert m["path"] == "fallback" and m["entries"] and m["verification"].startswith("inotify")
    assert fws.status() == {name: "U"}
    info = fws.doit("info", name)
    assert "'path': 'locked'" in info.stdout and "mimo.lock.toml captured" in info.stdout

    # A runner whose checkout lacks the lock still trusts the marker of the server run.
    locks.path_for(fws.models / "mimo.toml").unlink()
    assert fws.status() == {name: "U"}
    assert "'path': 'fallback'" in fws.doit("info", name).stdout


def test_second_cold_warm_uses_the_lock_and_never_the_server(fws):
    mimo(fws, "ok")
    assert fws.doit("warm").returncode == 0
    server_entries = set(marker(fws)["entries"])
    shutil.rmtree(fws.root)  # a wiped cache: a fresh runner with the lock committed

    listing = fws.doit("list", "--all")
    assert "3 shapes, locked" in listing.stdout
    compiled_before = len(fws.compiles())
    out = fws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert server_runs(fws) == 1, "the server ran again"
    assert len(fws.compiles()) > compiled_before, "the direct worker compiled nothing"
    assert "warmed " in out.stdout
    assert set(marker(fws)["entries"]) == server_entries
    assert set(fws.status().values()) == {"U"}


@pytest.mark.one_layout
@pytest.mark.parametrize("mode, line", [("crash", "Scheduler hit an exception"),
                                        ("sigquit", "Received sigquit from a child")])
def test_failure_line_stops_the_server_early(fws, mode, line):
    mimo(fws, mode, timeout=120)
    started = time.monotonic()
    out = fws.doit("warm")
    assert time.monotonic() - started < 15, "waited for the timeout instead of the failure line"
    assert out.returncode == 1
    assert f"stopped on log line '[2026-11-22 10:00:00 TP0] {line}" in out.stdout + out.stderr
    assert "Load weight begin." in out.stdout  # the tail, on failure too
    assert not survivors(fws)
    assert not locks.path_for(fws.models / "mimo.toml").exists()


@pytest.mark.one_layout
def test_timeout_ends_the_server(fws):
    mimo(fws, "hang", timeout=3)
    out = fws.doit("warm")
    assert out.returncode == 1
    assert "timed out after" in out.stdout + out.stderr
    assert not survivors(fws)


@pytest.mark.one_layout
def test_grandchild_in_new_session_ignoring_sigterm_is_ended_and_bystander_survives(fws):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", fws.env["FAKE_DG_TOKEN"]])
    try:
        mimo(fws, "grandchild", timeout=3)
        out = fws.doit("warm")
        assert out.returncode == 1
        assert [p.pid for p in survivors(fws)] == [bystander.pid]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.one_layout
def test_large_output_is_streamed_and_tailed(fws):
    mimo(fws, "chatty")
    out = fws.doit("warm")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    log = next((fws.root / "jitwarm" / "logs").glob("fallback-*.log"))
    assert log.stat().st_size > 64 * 1024
    tail = [line for line in out.stdout.splitlines() if "] | " in line]
    assert len(tail) == 30
    assert len(next(iter(locks.read(fws.models / "mimo.toml").values())).shapes) == 3


def test_empty_capture_records_an_empty_lock_and_later_warms_are_no_ops(fws):
    mimo(fws, "empty")
    assert fws.doit("warm").returncode == 0
    [capture] = locks.read(fws.models / "mimo.toml").values()
    assert capture.shapes == ()
    assert "0 shapes, locked" in fws.doit("list", "--all").stdout
    shutil.rmtree(fws.root)
    assert fws.doit("warm").returncode == 0
    assert server_runs(fws) == 1 and not fws.compiles()


def test_lock_for_other_args_is_ignored_and_info_says_so(fws):
    mimo(fws, "ok")
    assert fws.doit("warm").returncode == 0
    mimo(fws, "ok", extra_args=', "--attention-backend", "fa3"')
    [(name, flag)] = fws.status().items()
    assert flag == "R"
    info = fws.doit("info", name)
    assert "was captured for other launch args" in info.stdout and "'path': 'fallback'" in info.stdout
    assert "launch args changed" in info.stdout


@pytest.mark.one_layout
def test_missing_compile_module_fails_only_the_fallback_target(fws):
    mimo(fws, "ok")
    model_file(fws.models, "v3", "[[launch]]\ntp = 8\n" + M_LIST)
    out = fws.doit("warm", JITWARM_COMPILE_MODULE="no_such_compile_module")
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "no_such_compile_module is not importable" in text and "Traceback" not in text
    assert sorted(fws.status().values()) == ["R", "U"]


@pytest.mark.one_layout
@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is installed here")
def test_without_sglang_the_fallback_says_so_in_one_line(ws):
    mimo(ws, "ok")
    out = ws.doit("warm")
    assert out.returncode == 1
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "sglang is not installed" in line]
    assert len(lines) == 1 and "python -m sglang.compile_deep_gemm" in lines[0]


@pytest.mark.one_layout
def test_interrupt_prints_the_tail_and_ends_the_server(fws):
    from conftest import DODO

    mimo(fws, "grandchild", timeout=300)
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=fws.tmp, env=fws.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not survivors(fws) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors(fws), "the stand-in server never started its grandchild"
    proc.send_signal(subprocess.signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert "] | [2026-11-22 10:00:00 TP0] Load weight begin." in output
    assert not survivors(fws)
    assert not list((fws.root / "jitwarm" / "staging").glob("*"))


def complete_entries(ws) -> set[str]:
    return set(entries.complete(cache(ws.root, ws.layout)))


@pytest.mark.parametrize("mode", ["ok", "warm-crash"])
def test_every_kernel_the_server_compiled_is_kept_even_when_it_fails(fws, mode):
    mimo(fws, mode, timeout=120)
    out = fws.doit("warm")
    assert out.returncode == (0 if mode == "ok" else 1), out.stdout + out.stderr
    compiled = set(fws.compiles())
    assert len(compiled) == 1 + 4 + 4 + 4  # a shared transpose, then 4 M configs for each of 3 shapes
    assert compiled <= complete_entries(fws), f"lost {sorted(compiled - complete_entries(fws))}"
    assert not list((fws.root / "jitwarm" / "staging").glob("*"))
    if mode == "ok":
        assert set(marker(fws)["entries"]) == compiled


def test_server_honours_the_legacy_sgl_spelling_through_the_view(fws):
    """sglang copies SGL_DG_CACHE_DIR over SGLANG_DG_CACHE_DIR: the run must still land in the view."""
    mimo(fws, "ok")
    elsewhere = fws.tmp / "elsewhere"
    out = fws.doit("warm", SGL_DG_CACHE_DIR=str(fws.root), DG_JIT_CACHE_DIR=str(elsewhere))
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(fws.compiles()) <= complete_entries(fws) and marker(fws)["entries"]
    assert not elsewhere.exists()


def test_a_lock_naming_a_type_without_executor_fails_only_its_target_in_one_line(fws):
    mimo(fws, "newtype")
    first = fws.doit("warm")
    assert first.returncode == 0, first.stdout + first.stderr  # the server warmed every type itself
    [capture] = locks.read(fws.models / "mimo.toml").values()
    assert ("GEMM_NT_FP4FP4BF16", 4096, 7168, 1) in capture.shapes
    [mimo_target] = fws.status()
    assert fws.status() == {mimo_target: "U"}
    assert "of a kernel type jitwarm cannot run" in fws.doit("list", "--all").stdout

    shutil.rmtree(fws.root)  # a cold runner with the lock committed: jitwarm warms what it can
    model_file(fws.models, "v3", "[[launch]]\ntp = 8\n" + M_LIST)
    out = fws.doit("warm")
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "no executor in jitwarm for kernel type" in line]
    assert len(lines) == 1 and "GEMM_NT_FP4FP4BF16 N=4096 K=7168" in lines[0], text
    status = fws.status()
    assert status[mimo_target] == "R" and [f for n, f in status.items() if n != mimo_target] == ["U"]
    assert server_runs(fws) == 1, "the server ran again"
    shapes = [json.loads(p.read_text()) for p in (fws.root / "jitwarm" / "shapes").glob("*.json")]
    # v3's six, and mimo's masked one: its two NORMAL shapes are v3's too, warmed once.
    assert all(record["ok"] for record in shapes) and len(shapes) == 7
    stale = fws.doit("stale", cwd=REPO)
    assert "no executor in jitwarm for kernel type GEMM_NT_FP4FP4BF16" not in stale.stdout  # not a stale reason


@pytest.mark.one_layout
def test_stale_says_why_the_last_fallback_failed_until_it_succeeds(fws):
    def stale(**env):
        return subprocess.run([sys.executable, "-m", "doit", "stale"], cwd=REPO, env={**fws.env, **env},
                              capture_output=True, text=True, timeout=120)

    mimo(fws, "hang", timeout=2)
    assert fws.doit("warm").returncode == 1
    out = stale()
    assert out.returncode == 1
    assert "last fallback failed: fake_compile_deep_gemm timed out after 2s (log " in out.stdout, out.stdout
    mimo(fws, "ok")
    assert fws.doit("warm", JITWARM_COMPILE_MODULE="no_such_compile_module").returncode == 1
    assert "last fallback failed: no_such_compile_module is not importable" in stale().stdout
    assert fws.doit("warm").returncode == 0
    assert stale().returncode == 0
    [name] = [line.split()[0] for line in fws.doit("list", "--all").stdout.splitlines() if line.startswith("warm:")]
    assert not (fws.root / "jitwarm" / "fallback" / f"{name.removeprefix('warm:')}.json").exists()
