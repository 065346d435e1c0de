"""`doit watch -- CMD` end to end through the stand-ins: what compiled while CMD ran, its
shape, the exit code, the reports, and `--record` feeding the next warm."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from conftest import FAKES, REPO, Workspace, model_file
from tasks.plan import locks
from tasks.report import watch as watch_report
from tasks.state import kernel_source

pytestmark = pytest.mark.both_layouts

SERVER = [sys.executable, str(FAKES / "fake_server.py")]
MASKED = "GROUPED_GEMM_NT_F8F8BF16_MASKED:7168:2048:16:1"
CONTIG = "GROUPED_GEMM_NT_F8F8BF16_CONTIG:4096:7168:8:128"
SHAPES = {"GROUPED_GEMM_NT_F8F8BF16_MASKED N=7168 K=2048 num_groups=16",
          "GROUPED_GEMM_NT_F8F8BF16_CONTIG N=4096 K=7168 num_groups=8"}
SCHEMA = json.loads((REPO / "docs" / "watch-report.schema.json").read_text())
TP8 = "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"


def watch(ws: Workspace, *args: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """`doit watch ARGS` from the repo root, where pyproject.toml registers the command."""
    report = ws.tmp / "watch.json"
    report.unlink(missing_ok=True)
    return subprocess.run([sys.executable, "-m", "doit", "watch", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={**ws.env, "JITWARM_WATCH_REPORT_JSON": str(report),
                               "JITWARM_WATCH_JUNIT_XML": str(ws.tmp / "watch.xml"), **env})


def report(ws: Workspace) -> dict:
    data = json.loads((ws.tmp / "watch.json").read_text())
    jsonschema.validate(data, SCHEMA)
    return data


def prime(ws: Workspace) -> None:
    """Build the scale-transpose kernel every FP8 call shares, so a watched call compiles only its own."""
    done = subprocess.run([*SERVER, "GEMM_NT_F8F8BF16:128:128:1:1"], env={**ws.env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_two_compiles_are_reported_with_their_shapes_and_fail_only_under_fail(ws):
    prime(ws)
    out = watch(ws, "--fail", "--", *SERVER, MASKED, CONTIG)
    assert out.returncode == 1, out.stderr
    data = report(ws)
    assert [e["shape"] for e in data["entries"]] and {e["shape"] for e in data["entries"]} == SHAPES
    assert len(data["entries"]) == 2 and data["missed_shapes"] and set(data["missed_shapes"]) == SHAPES
    assert all(e["seconds"] is not None and e["layout"] == ws.layout for e in data["entries"])
    assert (data["command_exit_code"], data["exit_code"]) == (0, 1)
    assert "2 kernels compiled while the command ran (2 missed shapes)" in out.stderr.splitlines()[-1]
    for shape in SHAPES:  # said as each appeared, with its N and K
        assert any(line.endswith(shape) for line in out.stderr.splitlines()), out.stderr
    xml = (ws.tmp / "watch.xml").read_text()
    assert xml.count("<failure") == 2 and all(f'name="{shape}"' in xml for shape in SHAPES)

    # Without --fail the same compiles are reported, and the command's 0 stands.
    shutil.rmtree(ws.root / "cache")
    prime(ws)
    out = watch(ws, "--", *SERVER, MASKED, CONTIG)
    assert out.returncode == 0, out.stderr
    assert {e["shape"] for e in report(ws)["entries"]} == SHAPES


def test_a_command_that_compiles_nothing_exits_0_even_under_fail(ws):
    prime(ws)
    subprocess.run([*SERVER, MASKED], env=ws.env, check=True, capture_output=True)
    summary = ws.tmp / "summary.md"
    out = watch(ws, "--fail", "--", *SERVER, MASKED, GITHUB_STEP_SUMMARY=str(summary))
    assert out.returncode == 0, out.stderr
    assert report(ws)["entries"] == [] and report(ws)["exit_code"] == 0
    assert out.stderr.splitlines()[-1] == "jitwarm watch: 0 kernels compiled while the command ran (exit 0)"
    assert 'name="no JIT compile"' in (ws.tmp / "watch.xml").read_text()
    assert "0 kernels compiled" in summary.read_text()


def test_the_commands_own_exit_code_passes_through(ws):
    out = watch(ws, "--fail", "--", *SERVER, MASKED, "--exit", "7")
    assert out.returncode == 7, out.stderr
    data = report(ws)
    assert data["command_exit_code"] == 7 and data["exit_code"] == 7 and data["entries"]
    # Killed by a signal: the shell's 128 + N.
    out = watch(ws, "--", "sh", "-c", "kill -TERM $$")
    assert out.returncode == 143 and report(ws)["command_exit_code"] == 143


@pytest.mark.one_layout
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 5), (signal.SIGINT, 6)])
def test_a_signal_sent_to_the_watch_alone_is_passed_on_to_the_command(ws, sig, code):
    ready = ws.tmp / "ready"
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(5))\n"
              "signal.signal(signal.SIGINT, lambda *a: sys.exit(6))\n"
              f"open({str(ready)!r}, 'w').close()\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "doit", "watch", "--", sys.executable, "-c", script], cwd=REPO,
                            env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err


def test_a_root_with_no_cache_dir_yet_is_watched_as_it_appears(ws):
    assert not ws.root.exists()
    out = watch(ws, "--", *SERVER, MASKED)
    assert out.returncode == 0, out.stderr
    entries = report(ws)["entries"]
    assert {e["shape"] for e in entries} >= {"GROUPED_GEMM_NT_F8F8BF16_MASKED N=7168 K=2048 num_groups=16"}
    assert all(e["seconds"] is not None for e in entries), entries  # seen live, not only at the end


@pytest.mark.one_layout
def test_entries_that_appear_in_a_read_only_root_are_reported_too(tmp_path):
    ws = Workspace(tmp_path, "0.2.x")  # only DeepJIT has read-only roots
    readonly = ws.tmp / "baked"
    (readonly / "cache").mkdir(parents=True)
    roots = f"{ws.root}:{readonly}"
    subprocess.run([*SERVER, MASKED], env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.tmp / "elsewhere")}, check=True)
    [built] = [p for p in (ws.tmp / "elsewhere" / "cache").iterdir() if "masked" in p.name]
    copy = f"import shutil; shutil.copytree({str(built)!r}, {str(readonly / 'cache' / built.name)!r})"
    out = watch(ws, "--", sys.executable, "-c", copy, DG_JIT_CACHE_DIR=roots)
    assert out.returncode == 0, out.stderr
    [entry] = report(ws)["entries"]
    assert entry["root"] == str(readonly) and entry["shape"] in SHAPES
    assert report(ws)["cache_roots"] == [str(ws.root), str(readonly)]


@pytest.mark.one_layout
def test_usage_errors_run_nothing(ws):
    out = watch(ws)
    assert out.returncode == 3 and "no command to run" in out.stderr
    out = watch(ws, "--", str(ws.tmp / "no-such-command"))
    assert out.returncode == 127 and "cannot run" in out.stderr  # as a shell says it
    (ws.tmp / "not-executable").write_text("#!/bin/sh\n")
    out = watch(ws, "--", str(ws.tmp / "not-executable"))
    assert out.returncode == 126 and "cannot run" in out.stderr
    model_file(ws.models, "v3", TP8)
    marker = ws.tmp / "ran"
    out = watch(ws, "--record", "nope", "--", "touch", str(marker))
    assert out.returncode == 3 and "--record: unknown target 'nope'" in out.stderr and not marker.exists()


@pytest.mark.one_layout
def test_record_refuses_a_fallback_target_before_running_the_command(ws):
    model_file(ws.models, "v3", '[[launch]]\ntp = 8\npath = "fallback"\n')
    marker = ws.tmp / "ran"
    out = watch(ws, "--record", "v3", "--", "touch", str(marker))
    assert out.returncode == 3 and "has no shape list yet (fallback path" in out.stderr
    assert not marker.exists()


def test_record_makes_the_next_warm_build_exactly_the_missed_shapes(warmed_tp8):
    ws = warmed_tp8
    [target] = [n for n in ws.status()]
    name = target.removeprefix("warm:")

    out = watch(ws, "--record", name, "--", *SERVER, MASKED, CONTIG)
    assert out.returncode == 0, out.stderr
    recorded = report(ws)["recorded"]
    assert set(recorded["added"]) == SHAPES and recorded["error"] is None
    lock = (ws.models / "v3.lock.toml").read_text()
    assert "[[watched]]" in lock and all(f'"{shape}"' in lock for shape in SHAPES)

    plan = subprocess.run([sys.executable, "-m", "doit", "plan", name], cwd=REPO, env=ws.env, capture_output=True,
                          text=True)
    watched = [line for line in plan.stdout.splitlines() if line.endswith("(from doit watch)")]
    assert len(watched) == 2 and any("N=7168 K=2048 groups=16" in line for line in watched), plan.stdout
    assert ws.status()[target] == "R"

    before = set(ws.compiles())
    out = ws.doit("warm")
    assert out.returncode == 0, out.stdout + out.stderr
    built = [n for n in ws.compiles() if n not in before]
    assert built, "the warm built nothing"
    shapes = {kernel_source.read(ws.root / "cache" / n).shape for n in built}
    assert {locks.shape_text(s) for s in shapes} == SHAPES  # those two shapes, nothing else
    assert ws.status()[target] == "U"

    # The same run, watched again, compiles nothing; recording again adds nothing.
    out = watch(ws, "--fail", "--record", name, "--", *SERVER, MASKED, CONTIG)
    assert out.returncode == 0, out.stderr
    assert report(ws)["entries"] == [] and report(ws)["recorded"]["added"] == []


def test_the_schema_file_is_current():
    assert SCHEMA == json.loads(json.dumps(watch_report.json_schema())), "run: python -m tasks.report.watch --schema"


def test_each_entry_names_its_layouts_name_and_family(ws):
    prime(ws)
    assert watch(ws, "--", *SERVER, MASKED).returncode == 0
    [entry] = report(ws)["entries"]
    assert entry["family"] == "sm90_fp8_m_grouped_gemm_masked_1d2d" and entry["name"].count(entry["family"]) == 1
    assert entry["template"] == "sm90_fp8_gemm_1d2d_impl" and entry["layout"] == ws.layout
    assert entry["name"].startswith("kernel.") == (ws.layout == "0.1.x")


def test_an_entry_that_appears_and_is_removed_is_still_reported(ws):
    prime(ws)
    subprocess.run([*SERVER, MASKED], env={**ws.env, "DG_JIT_CACHE_DIR": str(ws.tmp / "elsewhere")}, check=True)
    [built] = [p for p in (ws.tmp / "elsewhere" / "cache").iterdir() if "masked" in p.name]
    dest, tmp = ws.root / "cache" / built.name, ws.tmp / "building"
    (ws.root / "cache").mkdir(parents=True, exist_ok=True)
    # Published by rename, as DeepGEMM does, then removed (a cleanup job, say) before the command ends.
    script = (f"import os, shutil, time; shutil.copytree({str(built)!r}, {str(tmp)!r}); "
              f"os.rename({str(tmp)!r}, {str(dest)!r}); time.sleep(0.5); shutil.rmtree({str(dest)!r})")
    assert watch(ws, "--fail", "--", sys.executable, "-c", script).returncode == 1
    [entry] = report(ws)["entries"]
    assert entry["gone"] and entry["name"] == built.name and entry["shape"] in SHAPES


def test_a_compile_in_a_background_child_of_the_command_is_waited_for_and_reported(ws):
    # Regression: `cmd &` then exit ended the watch at once with "0 kernels compiled", and the child
    # built an entry nobody reported.
    prime(ws)
    background = " ".join(["exec", *SERVER, MASKED])
    script = f"sleep 0.5; {background}"
    out = watch(ws, "--fail", "--", "sh", "-c", f"({script}) > /dev/null 2>&1 &")
    assert out.returncode == 1, out.stderr
    assert re.search(r"the command exited and left \d+ process\(es\) running; waiting for them", out.stderr)
    assert [e["shape"] for e in report(ws)["entries"]] == [
        "GROUPED_GEMM_NT_F8F8BF16_MASKED N=7168 K=2048 num_groups=16"]


@pytest.mark.one_layout
def test_a_kill_9_of_the_watch_ends_the_command_too(ws):
    token = f"jitwarm-watch-{time.time_ns()}"
    ready = ws.tmp / "ready"
    script = f"import time, sys; open({str(ready)!r}, 'w').close(); time.sleep(60)  # {token}"
    proc = subprocess.Popen([sys.executable, "-m", "doit", "watch", "--", sys.executable, "-c", script], cwd=REPO,
                            env=ws.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    proc.kill()
    proc.wait(timeout=10)
    import psutil

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]
        if not left:
            break
        time.sleep(0.1)
    assert not left, "the watched command outlived a kill -9 of the watch"
