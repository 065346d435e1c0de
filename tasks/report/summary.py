"""GitHub step summary: a markdown table appended to $GITHUB_STEP_SUMMARY.

GitHub rejects a step summary over 1 MiB, so rows that do not fit are dropped (up to
date ones first, failures last) and a note says how many.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.report.model import Report, TargetResult
from tasks.plan.text import plural

LIMIT_BYTES = 1024 * 1024
ENV = "GITHUB_STEP_SUMMARY"
_ORDER = {"failed": 0, "partial": 1, "rebuilt": 2, "up to date": 3}
_REASON_CHARS = 500


def cell(text: str) -> str:
    """One table cell: pipes escaped, lines joined, long text cut."""
    text = " ".join(str(text).split())
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|")


def row(target: TargetResult) -> str:
    return (f"| `{cell(target.name)}` | {target.outcome} | {cell(target.reason)} | "
            f"{target.kernels_compiled} | {target.seconds:.1f} |\n")


def render(report: Report, budget: int = LIMIT_BYTES) -> str:
    """The markdown, at most `budget` bytes (UTF-8)."""
    t = report.totals
    head = (f"### jitwarm{f' (shard {report.shard})' if report.shard else ''}: {t.rebuilt} rebuilt, "
            f"{t.partial} partial, {t.up_to_date} up to date, {t.failed} failed\n\n"
            "| target | outcome | reason | kernels compiled | seconds |\n|---|---|---|---:|---:|\n")
    foot = (f"\n**Totals:** {plural(t.targets, 'target')}, {plural(t.kernels_compiled, 'kernel')} compiled, "
            f"{t.seconds:.1f} s. "
            f"Cache root: `{cell(report.cache_root)}`\n\n{_remote_line(report)}")
    rows = [row(x) for x in sorted(report.targets, key=lambda x: (_ORDER[x.outcome], x.name))]
    text = head + "".join(rows) + foot
    if len(text.encode()) <= budget:
        return text
    # Keep rows while they fit beside the longest possible note; failures sort first, so
    # what is cut is what matters least.
    used = len((head + foot + _note(len(rows))).encode())
    kept: list[str] = []
    for line in rows:
        used += len(line.encode())
        if used > budget:
            break
        kept.append(line)
    text = head + "".join(kept) + _note(len(rows) - len(kept)) + foot
    return text if len(text.encode()) <= budget else ""  # not even the header fits: write nothing


def _remote_line(report: Report) -> str:
    r = report.totals.remote
    if r is None:
        return ""
    return (f"**Remote cache** `{cell(r.url)}`: {r.hits} hits, {r.misses} misses, {r.rejected} rejected, "
            f"{r.errors} errors, {r.incomplete} incomplete; {r.pushed} pushed, {r.push_errors} push errors.\n\n")


def _note(dropped: int) -> str:
    return (f"\n_{dropped} more targets not shown: a step summary is limited to 1 MiB. "
            f"The JSON report and JUnit XML list every target._\n")


def append(report: Report, environ=None) -> Path | None:
    env = os.environ if environ is None else environ
    target = env.get(ENV)
    if not target:
        return None
    path = Path(target)
    existing = path.stat().st_size if path.exists() else 0
    text = render(report, LIMIT_BYTES - existing)
    if text:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    return path
