"""JUnit XML, the JSON report and the GitHub step summary, from real `doit warm` runs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from junitparser import Failure, JUnitXml, Skipped

from conftest import REPO, Workspace, model_file

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
DP8 = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + SMALL
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())

def warm_with_reports(ws: Workspace, **env):
    paths = {"JITWARM_JUNIT_XML": ws.tmp / "out" / "junit.xml", "JITWARM_REPORT_JSON": ws.tmp / "out" / "report.json",
             "GITHUB_STEP_SUMMARY": ws.tmp / "summary.md"}
    out = ws.doit("warm", **{k: str(v) for k, v in paths.items()}, **env)
    return out, paths


def suites(path: Path) -> dict:
    return {suite.name: suite for suite in JUnitXml.fromfile(str(path))}


def cache_entries(ws: Workspace) -> set[str]:
    return {p.name for p in (ws.root / "cache").iterdir()}


def test_reports_name_each_outcome_with_reasons_and_tails(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    (ws.models / "broken.toml").write_text('hf_id = "a/b"\n[[launch]]\ntp = "8"\n')
    out, paths = warm_with_reports(ws, FAKE_DG_CRASH_ON="7168x16384")  # only the dp-attention plan has it
    assert out.returncode == 1, out.stdout + out.stderr

    data = json.loads(paths["JITWARM_REPORT_JSON"].read_text())
    jsonschema.validate(data, SCHEMA)
    v3 = [t for t in data["targets"] if t["model"] == "v3"]
    # Only the dp-attention plan has the 7168x16384 shape.
    (dp,) = [t for t in v3 if any("7168x16384" in s["name"] for s in t["shapes"])]
    (plain,) = [t for t in v3 if t is not dp]
    (broken,) = [t for t in data["targets"] if t["model"] == "broken"]
    assert (plain["outcome"], dp["outcome"], broken["outcome"]) == ("rebuilt", "failed", "failed")
    assert plain["reason"] == "not warmed yet (no marker)"
    assert "launch[0].tp: expected a positive integer" in broken["reason"]
    crashed = [s for s in dp["shapes"] if s["outcome"] == "failed"]
    assert [s["name"].split("-")[1] for s in crashed] == ["7168x16384"]
    assert any("CUDA error" in line for line in crashed[0]["log_tail"])
    # Kernels compiled add up to what appeared in the cache (shared kernels counted once).
    assert data["totals"]["kernels_compiled"] == len(cache_entries(ws)) > 0
    assert plain["kernels_compiled"] == len(json.loads(next((ws.root / "jitwarm" / "markers").glob(
        f"{plain['name']}.json")).read_text())["entries"])
    assert data["totals"] | {"seconds": 0} == {"targets": 3, "up_to_date": 0, "rebuilt": 1, "partial": 0,
                                               "failed": 2, "kernels_compiled": len(cache_entries(ws)), "seconds": 0,
                                               "remote": None}
    assert data["exit_code"] == 1 and data["fingerprint"]["deep_gemm.module"] == "fake_deep_gemm"

    found = suites(paths["JITWARM_JUNIT_XML"])
    assert set(found) == {plain["name"], dp["name"], broken["name"]}
    assert (found[plain["name"]].tests, found[plain["name"]].failures) == (len(plain["shapes"]), 0)
    dp_suite = found[dp["name"]]
    assert (dp_suite.tests, dp_suite.failures) == (len(dp["shapes"]), 1)
    failure = next(r for case in dp_suite for r in case.result if isinstance(r, Failure))
    assert "7168x16384" in failure.message or "CUDA error" in (failure.text or "")
    assert "CUDA error" in failure.text
    (broken_case,) = list(found[broken["name"]])
    assert "expected a positive integer" in broken_case.result[0].message

    text = paths["GITHUB_STEP_SUMMARY"].read_text()
    assert "| target | outcome | reason | kernels compiled | seconds |" in text
    assert f"| `{plain['name']}` | rebuilt | not warmed yet (no marker) | {plain['kernels_compiled']} |" in text
    assert f"| `{dp['name']}` | failed |" in text
    assert f"Cache root: `{data['cache_root']}`" in text and "3 targets" in text

    # Plain progress lines, one per target event.
    assert f"rebuilt {plain['name']}" in out.stdout and f"failed {dp['name']}" in out.stdout


def test_up_to_date_targets_pass_with_skip(ws):
    model_file(ws.models, "v3", TP8)
    assert ws.doit("warm").returncode == 0
    out, paths = warm_with_reports(ws)
    assert out.returncode == 0, out.stdout
    (suite,) = suites(paths["JITWARM_JUNIT_XML"]).values()
    assert suite.tests > 0 and suite.skipped == suite.tests and suite.failures == 0
    assert all(isinstance(r, Skipped) and r.message == "up to date" for case in suite for r in case.result)
    data = json.loads(paths["JITWARM_REPORT_JSON"].read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["totals"]["up_to_date"] == 1 and data["totals"]["kernels_compiled"] == 0
    assert "| up to date | up to date | 0 |" in paths["GITHUB_STEP_SUMMARY"].read_text()


def test_counts_add_up_when_targets_share_shapes(ws):
    # Two launches of one model share most shapes; two workers finish them in any order.
    model_file(ws.models, "v3", TP8 + DP8)
    out, paths = warm_with_reports(ws, JITWARM_JOBS="2", JITWARM_PROGRESS="plain")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(paths["JITWARM_REPORT_JSON"].read_text())
    total = data["totals"]["kernels_compiled"]
    assert total == len(cache_entries(ws)) > 0
    assert sum(t["kernels_compiled"] for t in data["targets"]) == total
    shown = [int(line.split("(")[1].split(", ")[1].split()[0]) for line in out.stdout.splitlines()
             if "] rebuilt " in line]
    assert len(shown) == 2 and sum(shown) == total, out.stdout
    assert f"; {total} kernels compiled in " in out.stdout
    # The suites run side by side: the run's time is its wall time, not their sum.
    xml = JUnitXml.fromfile(str(paths["JITWARM_JUNIT_XML"]))
    assert xml.time == data["totals"]["seconds"] < sum(s.time for s in xml)
    # One line per target event: no "queued" lines, no "up to date" for a target being rebuilt.
    for target in data["targets"]:
        said = [line for line in out.stdout.splitlines() if target["name"] in line]
        assert [line.split("] ")[1].split()[0] for line in said] == ["started", "rebuilt"], out.stdout
    assert "queued" not in out.stdout


def test_github_actions_gets_one_group_and_an_error_per_failed_target(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    (ws.models / "broken.toml").write_text('hf_id = "a/b"\n[[launch]]\ntp = "8"\n')
    out = ws.doit("warm", GITHUB_ACTIONS="true", FAKE_DG_CRASH_ON="7168x16384")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "::group::jitwarm: 3 targets"
    assert lines[-2:][0] == "::endgroup::" and lines[-1].startswith("jitwarm: 1 rebuilt, 0 partial, 0 up to date, 2 failed")
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 2, out.stdout
    broken = next(e for e in errors if "broken" in e)
    # Properties escape ':' and ','; the message keeps its text on one line.
    assert broken.startswith("::error title=jitwarm%3A broken@") and "failed::" in broken
    assert "launch[0].tp: expected a positive integer" in broken
    assert not any(line.startswith("::") for line in ws.doit("warm", GITHUB_ACTIONS="false").stdout.splitlines())
