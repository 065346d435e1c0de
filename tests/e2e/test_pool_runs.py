"""The compile pool through `doit warm`: worker caps, concurrent runs, the replay proof."""

from __future__ import annotations

import re

import pytest

from conftest import model_file

pytestmark = pytest.mark.both_layouts


@pytest.fixture(autouse=True)
def kernel_queue_on(ws):
    ws.env["JITWARM_KERNEL_QUEUE"] = "on"  # the default outside the tests (tasks/runner/kernel_queue.py)


@pytest.mark.one_layout
def test_jobs_setting_caps_the_workers(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", JITWARM_JOBS="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "with 1 worker" in out.stdout and "1 workers" not in out.stdout  # and said as English says it
    assert "with 1 worker" not in ws.doit("warm", JITWARM_JOBS="0").stdout


def test_two_concurrent_runs_never_warm_a_shape_or_compile_a_kernel_twice(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
               '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\nm_list = [1, 32, 128, 1024]\n')
    codes, outputs = ws.concurrent_warms(2, FAKE_DG_COMPILE_S="0.3")
    assert codes == [0, 0], outputs
    warmed = [line.split(":")[0] for out in outputs for line in out.splitlines() if line.startswith("warmed ")]
    assert len(warmed) == len(set(warmed)) == 9  # 9 distinct shapes, each warmed once
    assert "reusing the concurrent warm's result" in "".join(outputs)
    assert not ws.pool_processes(), "a prestarted pool process outlived its run"
    compiled = ws.compiles()
    assert len(compiled) == len(set(compiled)), "a kernel was compiled twice"
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_no_worker_waits_on_nvcc_the_probes_find_the_scale_transposes(ws):
    # The workers pass token scales pre-transposed, so no call waits for the transpose before
    # its GEMM is found; each shape's probe (the call as sglang makes it) finds the transpose.
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", FAKE_DG_COMPILE_S="0.05")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = next(line for line in out.stdout.splitlines() if line.startswith("compiled "))
    compiled, queued = map(int, re.search(r"compiled (\d+) kernels .*; (\d+) of them by the kernel queue",
                                          summary).groups())
    assert compiled == queued and compiled > 1, summary  # nvcc ran only in the queue, never in a worker
    assert any("transpose" in name for name in ws.compiles())
    assert set(ws.status().values()) == {"U"}  # every replay, with sglang's scales, compiled 0


def test_replay_that_compiles_is_a_failed_warm(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", FAKE_DG_REPLAY_EXTRA="1")
    assert out.returncode == 1
    assert "replay compiled 1 new entries after the warm; the warm missed kernels" in out.stdout + out.stderr


def test_shape_records_carry_the_completeness_proof(ws):
    import json

    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    assert ws.doit("warm").returncode == 0
    for path in (ws.root / "jitwarm" / "shapes").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["ok"] and record["replay"]["new_entries"] == 0 and record["replay"]["calls"] == 4
        assert record["pool"]["complete"] is True and record["pool"]["workers"] >= 1


@pytest.mark.one_layout
def test_a_call_whose_capture_fails_once_runs_eagerly_and_capture_resumes(ws):
    # On the H200, a shape's first capture in a worker can fail where its later ones would
    # not: the shape must not run all its calls eagerly because of one failure.
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]\n")
    calls = ws.tmp / "calls.log"
    out = ws.doit("warm", FAKE_DG_CALL_LOG=str(calls), FAKE_DG_CAPTURE_FAIL_ONCE="7168x2048", JITWARM_JOBS="1")
    assert out.returncode == 0, out.stdout + out.stderr
    mine = [line.split() for line in calls.read_text().splitlines() if line.startswith("compile ")
            and " 7168x2048 " in line]
    # One call ran eagerly, and capture went on for the rest; a call whose kernel was still being
    # compiled is made again later (so the eager one may also end captured).
    assert [how for _, how, _, _ in mine].count("eager") == 1, mine
    assert {m for _, how, _, m in mine if how == "captured"} >= {m for _, how, _, m in mine} - {
        m for _, how, _, m in mine if how == "eager"} and len({m for *_, m in mine}) == 10, mine
    summary = next(line for line in out.stdout.splitlines() if line.startswith("compiled "))
    assert "these ran eagerly" not in summary
    assert ("then capture resumed (first failure, "
            "normal-7168x2048-g1: RuntimeError: CUDA error: operation not permitted when stream is capturing)") \
        in summary, summary
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_a_shape_deep_gemm_refuses_fails_in_its_own_words_and_names_itself(ws):
    # BLOCK32 on sgl-deep-gemm 0.1.2: the call fails captured and eagerly alike.
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    out = ws.doit("warm", FAKE_DG_RAISE_ON="7168x2048:Assertion error: Unknown SF transformation",
                  JITWARM_JOBS="1")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Unknown SF transformation" in text and "GEMM_NT_F8F8BF16 N=7168 K=2048" in text, text[-3000:]
    [failed] = [line for line in out.stdout.splitlines() if " failed v3@tp8-" in line]
    assert "compile worker exited with code 1 on GEMM_NT_F8F8BF16 N=7168 K=2048 groups=1 (log " in failed, failed
    assert "During handling of the above exception" not in text


@pytest.mark.one_layout
def test_compile_workers_record_calls_in_graphs_and_run_eagerly_only_where_capture_fails(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    calls = ws.tmp / "calls.log"
    out = ws.doit("warm", FAKE_DG_CALL_LOG=str(calls), FAKE_DG_CAPTURE_FAIL="7168x2048")
    assert out.returncode == 0, out.stdout + out.stderr
    compile_calls = [line.split()[1:] for line in calls.read_text().splitlines() if line.startswith("compile ")]
    eager = {(tag, m) for how, tag, m in compile_calls if how == "eager"}
    # Every call of the other five shapes was recorded, not run; 7168x2048's ran once capture failed.
    assert eager == {("7168x2048", m) for m in ("1", "32", "128", "1024")}
    assert {tag for how, tag, _ in compile_calls if how == "captured"} == {
        "2112x7168", "3072x1536", "4096x512", "4608x7168", "7168x2304"}
    assert "graph capture failed, so these ran eagerly (compile logs say why): normal-7168x2048-g1" in out.stdout
    summary = next(line for line in out.stdout.splitlines() if line.startswith("compiled "))
    # The log also holds the attempts deferred behind a busy kernel (each made again later).
    captured, total, deferred = map(int, re.search(
        r"\((\d+) of (\d+) calls recorded in CUDA graphs, not run; (\d+) calls deferred", summary).groups())
    logged = sum(how == "captured" for how, _, _ in compile_calls)
    assert total == len(compile_calls) - deferred and logged - deferred <= captured <= logged, summary
    assert total - captured >= 4  # at least 7168x2048's four calls ran
    logs = "".join(p.read_text() for p in (ws.root / "jitwarm" / "logs").glob("compile-*.log"))
    assert "graph capture failed (RuntimeError: CUDA error: operation not permitted when stream is capturing); " \
           "running its calls eagerly" in logs
    # The replay proof is unchanged: every shape replays with 0 new entries.
    assert set(ws.status().values()) == {"U"}



@pytest.mark.one_layout
def test_the_last_shapes_replay_runs_in_a_process_started_while_the_workers_compiled(ws):
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    log = ws.tmp / "processes.log"
    ws.env["JITWARM_KERNEL_QUEUE"] = "off"  # the slow shape sleeps at every call: a deferred one would sleep twice
    # 1.2 s a call: under a loaded CI machine the replays of the five quick shapes (and the standbys
    # forked after them) must still be done well before the slow shape's calls are.
    out = ws.doit("warm", JITWARM_JOBS="2", JITWARM_TRACE="1", FAKE_DG_SLOW_ON="7168x2048:1.2",
                  FAKE_DG_DEVICE_LOG=str(log))
    assert out.returncode == 0, out.stdout + out.stderr
    last_slow = max(float(line.split()[3]) for line in log.read_text().splitlines() if line.startswith("slow "))
    trace = [line.split() for line in (ws.root / "jitwarm" / "logs" / "pool.log").read_text().splitlines()
             if line.startswith("trace ")]
    forked = {row[3]: float(row[2]) for row in trace if row[1] == "fork" and row[3].startswith("replay-standby-")}
    [(given, process)] = [(float(row[2]), row[5]) for row in trace if row[1] == "give" and "7168x2048" in row[3]]
    assert forked[process] < last_slow < given  # ready before the shape was, given it once its calls were made
    [shape_log] = (ws.root / "jitwarm" / "logs").glob("normal-7168x2048-*.log")
    assert "replayed by a process started before its shape was ready" in shape_log.read_text()
    assert set(ws.status().values()) == {"U"}


def test_a_shapes_replay_starts_once_its_calls_are_made_while_others_still_compile(ws):
    import json

    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    log = ws.tmp / "processes.log"
    ws.env["JITWARM_KERNEL_QUEUE"] = "off"  # the slow shape sleeps at every call: a deferred one would sleep twice
    # One worker spends 4 x 1.5 s on the 7168x2048 shape; the other finishes the rest long before.
    out = ws.doit("warm", JITWARM_JOBS="2", FAKE_DG_SLOW_ON="7168x2048:1.5", FAKE_DG_DEVICE_LOG=str(log))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in log.read_text().splitlines()]
    last_slow = max(float(r[3]) for r in rows if r[0] == "slow")
    replays = {r[4]: float(r[3]) for r in rows if r[0] == "replay"}
    assert min(replays.values()) < last_slow - 1, "no replay started before the compile phase ended"
    assert replays["7168x2048"] > last_slow  # its own replay waited for its last call
    for path in (ws.root / "jitwarm" / "shapes").glob("*.json"):
        record = json.loads(path.read_text())  # early replays are judged as strictly as the rest
        assert record["ok"] and record["replay"]["new_entries"] == 0 and record["pool"]["complete"] is True
