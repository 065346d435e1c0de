"""JUnit XML for CI test views: one suite per target, one case per shape (or fallback phase)."""

from __future__ import annotations

from pathlib import Path

from tasks.report.model import Report, TargetResult


def build(report: Report):
    from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

    def case(target: TargetResult, name: str, outcome: str, seconds, message, tail, remote="") -> TestCase:
        item = TestCase(name, classname=target.name, time=seconds or 0.0)
        if remote:
            item.system_out = remote
        if outcome == "failed":
            failure = Failure(message or "failed")
            failure.text = "\n".join([message or "failed", *tail])
            item.result = [failure]
        elif outcome in ("up to date", "other shard", "not run"):
            item.result = [Skipped(outcome if outcome != "other shard" else "warmed by another shard")]
        return item

    xml = JUnitXml("jitwarm")
    for target in report.targets:
        suite = TestSuite(target.name)
        if target.shapes:
            cases = [case(target, s.name, s.outcome, s.seconds, s.error, s.log_tail, _remote(s)) for s in target.shapes]
            if target.outcome == "failed" and not any(s.outcome == "failed" for s in target.shapes):
                # Failed before any shape ran (e.g. no deep_gemm here): say so once.
                cases.append(case(target, "target", "failed", target.seconds, target.reason, target.log_tail))
        elif target.phases:
            cases = [case(target, p.name, p.outcome, p.seconds, p.message, p.log_tail) for p in target.phases]
        else:  # an invalid spec, or a target that runs no DeepGEMM kernel
            cases = [case(target, "plan", target.outcome, target.seconds, target.reason, target.log_tail)]
        for item in cases:
            suite.add_testcase(item)
        suite.time = target.seconds
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    xml.time = report.totals.seconds  # the run's wall time: suites overlap, so their sum overstates it
    return xml


def _remote(shape) -> str:
    said = [f"remote cache: {shape.remote}" if shape.remote else "", f"pushed: {shape.pushed}" if shape.pushed else ""]
    return "; ".join(filter(None, said))


def write(report: Report, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build(report).write(str(path), pretty=True)
