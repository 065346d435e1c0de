"""The GitHub step summary (tasks/report/summary.py): bounded, appended, and table-safe."""

from __future__ import annotations

from tasks.report import model as report, summary


def _report(count: int, reason: str = "not warmed yet (no marker)") -> report.Report:
    targets = [report.TargetResult(name=f"m{i}@tp8-{i:08x}", model=f"m{i}", path="planned",
                                   outcome="failed" if i % 7 == 0 else "rebuilt", reason=reason,
                                   kernels_compiled=i, seconds=1.5) for i in range(count)]
    return report.Report(started_at="t0", finished_at="t1", exit_code=1, cache_root="/cache", fingerprint={},
                         totals=report.totals(targets, set(), 3.0), targets=targets)


def test_summary_stays_under_1_mib_and_says_what_it_cut():
    big = _report(20000, reason="x" * 400)
    text = summary.render(big)
    size = len(text.encode())
    assert 1024 * 1024 - 2000 < size <= 1024 * 1024
    shown = text.count("\n| `m")
    assert f"_{20000 - shown} more targets not shown" in text
    # Failures are kept first: every failed row that fits precedes any rebuilt row.
    rows = [line for line in text.splitlines() if line.startswith("| `m")]
    assert rows[0].split(" | ")[1] == "failed"
    assert text.rstrip().endswith("`")  # the totals line survives the cut


def test_summary_append_respects_what_the_file_already_holds(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("a" * (1024 * 1024 - 5000))
    summary.append(_report(500, reason="y" * 300), {"GITHUB_STEP_SUMMARY": str(target)})
    assert target.stat().st_size <= 1024 * 1024
    assert "more targets not shown" in target.read_text()


def test_summary_cells_cannot_break_the_table():
    text = summary.render(_report(1, reason="a | b\nc"))
    (row,) = [line for line in text.splitlines() if line.startswith("| `m0")]
    assert "a \\| b c" in row and row.count(" | ") == 4
