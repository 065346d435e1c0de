"""The JSON report's schema (tasks/report/model.py): generated from the types, and it rejects bad reports."""

from __future__ import annotations

import json

import jsonschema

from conftest import REPO
from tasks.report import model as report

SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())


def _report(count: int, reason: str = "not warmed yet (no marker)") -> report.Report:
    targets = [report.TargetResult(name=f"m{i}@tp8-{i:08x}", model=f"m{i}", path="planned",
                                   outcome="failed" if i % 7 == 0 else "rebuilt", reason=reason,
                                   kernels_compiled=i, seconds=1.5) for i in range(count)]
    return report.Report(started_at="t0", finished_at="t1", exit_code=1, cache_root="/cache", fingerprint={},
                         totals=report.totals(targets, set(), 3.0), targets=targets)


def test_schema_file_is_generated_from_the_report_types():
    assert SCHEMA == json.loads(json.dumps(report.json_schema())), "run: python -m tasks.report.model --schema"


def test_schema_rejects_a_report_missing_totals():
    bad = json.loads(report.encode(_report(2)))
    del bad["totals"]
    try:
        jsonschema.validate(bad, SCHEMA)
    except jsonschema.ValidationError:
        return
    raise AssertionError("a report without totals validated")
