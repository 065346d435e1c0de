"""The report of one `doit watch`: every cache entry that appeared while the command ran,
with the shape its kernel.cu names, in the outputs `doit warm` already uses: a summary
line, a JSON report (docs/watch-report.schema.json), JUnit XML (one failing case per
missed shape, one per entry that names none) and the GitHub step summary.

Within one schema_version, fields are only ever added, never removed or changed in meaning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

from tasks.state import records

SCHEMA_VERSION = 1


class Entry(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(description="the entry's directory under <root>/cache/")]
    root: str
    layout: Annotated[str, msgspec.Meta(description="0.1.x or 0.2.x")]
    family: Annotated[str, msgspec.Meta(description="the kernel family its name carries, e.g. sm90_fp8_gemm_1d2d")]
    template: Annotated[str, msgspec.Meta(description="the kernel template its kernel.cu instantiates")] = ""
    kind: str | None = None
    n: int | None = None
    k: int | None = None
    groups: int | None = None
    shape: Annotated[str | None, msgspec.Meta(
        description="'TYPE N=.. K=.. num_groups=..' as in shape locks; null when kernel.cu does not name it")] = None
    note: str = ""
    seconds: Annotated[float | None, msgspec.Meta(
        description="after the command started, when the watch saw it; null if found only at the end")] = None
    gone: bool = False


class Recorded(msgspec.Struct, kw_only=True):
    target: str
    lock: str
    added: list[str]  # shape texts new to the lock
    already_planned: list[str]  # shapes the target already warms: an M outside its M list needed them
    error: str | None = None


class WatchReport(msgspec.Struct, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    started_at: str
    finished_at: str
    command: list[str]
    command_exit_code: int
    exit_code: Annotated[int, msgspec.Meta(description="doit watch's: the command's, or 1 under --fail")]
    fail_on_compile: bool
    layout: str
    cache_roots: list[str]
    seconds: float
    entries: list[Entry]
    missed_shapes: Annotated[list[str], msgspec.Meta(description="distinct shapes of the entries, in order")]
    watch_problem: str | None = None
    recorded: Recorded | None = None


def missed_shapes(entries: list[Entry]) -> list[str]:
    return list(dict.fromkeys(e.shape for e in entries if e.shape))


def summary_line(report: WatchReport) -> str:
    n = len(report.entries)
    if not n:
        return f"jitwarm watch: 0 kernels compiled while the command ran (exit {report.command_exit_code})"
    shapes, unnamed = report.missed_shapes, sum(1 for e in report.entries if not e.shape)
    parts = [f"{len(shapes)} missed shape{'s' * (len(shapes) != 1)}"] if shapes else []
    if unnamed:
        parts.append(f"{unnamed} without a shape in their source")
    fail = "; exit 1 (--fail)" if report.exit_code == 1 and report.command_exit_code == 0 else ""
    return (f"jitwarm watch: {n} kernel{'s' * (n != 1)} compiled while the command ran ({', '.join(parts)}); "
            f"command exit {report.command_exit_code}{fail}")


def entry_line(entry: Entry) -> str:
    when = f"+{entry.seconds:.1f}s " if entry.seconds is not None else ""
    what = (entry.shape if entry.shape
            else f"{entry.kind or entry.family or 'unknown kernel'}: {entry.note}" if entry.note
            else entry.kind or entry.family)
    gone = " (removed before the command ended)" if entry.gone else ""
    return f"jitwarm watch: {when}compiled {entry.name} in {entry.root}: {what}{gone}"


def json_schema() -> dict:
    schema = msgspec.json.schema(WatchReport)
    schema["$comment"] = "jitwarm watch report; regenerate with: python -m tasks.report.watch --schema"
    return schema


def write_json(report: WatchReport, path: Path) -> None:
    records.replace_file(Path(path), msgspec.json.format(msgspec.json.encode(report), indent=1) + b"\n")


def write_junit(report: WatchReport, path: Path) -> None:
    from junitparser import Failure, JUnitXml, TestCase, TestSuite

    suite = TestSuite("jitwarm watch")
    command = " ".join(report.command)
    by_shape: dict[str, list[Entry]] = {}
    for entry in report.entries:
        by_shape.setdefault(entry.shape or f"entry {entry.name}", []).append(entry)
    for name, entries in by_shape.items():
        case = TestCase(name, classname="jitwarm.watch", time=0.0)
        first = entries[0]
        message = (f"{len(entries)} kernel(s) of {name} compiled while `{command}` ran" if first.shape
                   else f"{first.name} compiled while `{command}` ran: {first.note or first.template}")
        failure = Failure(message)
        failure.text = "\n".join([message, *(entry_line(e) for e in entries)])
        case.result = [failure]
        suite.add_testcase(case)
    if not by_shape:
        suite.add_testcase(TestCase("no JIT compile", classname="jitwarm.watch", time=report.seconds))
    suite.time = report.seconds
    suite.update_statistics()
    xml = JUnitXml("jitwarm watch")
    xml.add_testsuite(suite)
    xml.update_statistics()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    xml.write(str(path), pretty=True)


def append_step_summary(report: WatchReport, environ=None) -> Path | None:
    from tasks.report import summary

    env = os.environ if environ is None else environ
    if not env.get(summary.ENV):
        return None
    head = f"### {summary.cell(summary_line(report))}\n\n"
    rows = "".join(f"| `{summary.cell(e.name)}` | {summary.cell(e.shape or e.note)} | "
                   f"{'' if e.seconds is None else f'{e.seconds:.1f}'} |\n" for e in report.entries)
    table = "| entry | shape | seconds |\n|---|---|---:|\n" + rows if rows else ""
    recorded = ""
    if report.recorded and report.recorded.added:
        recorded = (f"\nRecorded {len(report.recorded.added)} shape(s) into `{summary.cell(report.recorded.lock)}` "
                    f"for `warm:{summary.cell(report.recorded.target)}`.\n")
    text = head + table + recorded + "\n"
    path = Path(env[summary.ENV])
    if path.exists() and path.stat().st_size + len(text.encode()) > summary.LIMIT_BYTES:
        text = head + f"_{len(report.entries)} entries: see the JSON report (a step summary is limited to 1 MiB)._\n\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
    return path


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--schema"]:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(json_schema()), indent=2).decode() + "\n")
