"""doit reporter for `doit warm`: live progress, then the JSON report, JUnit XML and the
GitHub step summary, all from one report built from markers and shape records.

doit tells it when targets start, end or are skipped; the warm's own events (tasks/
session.py) tell it when a shape or target lands inside the batch that the first target
runs. Writing a report never fails the warm: a problem is one warning line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter

from doit.reporter import ConsoleReporter

from tasks import session as run_state
from tasks.cli import noop
from tasks.report import model as report, progress, summary
from tasks.state import builds, entries, records
from tasks.plan.text import plural

PREFIX = "warm:"


class WarmReporter(ConsoleReporter):
    desc = "jitwarm: progress, JSON report, JUnit XML, GitHub step summary"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.started, self.started_at, self.started_epoch = time.monotonic(), records.now(), time.time()
        self.runs: dict[str, report.TargetRun] = {}
        self.display: progress.Display | None = None
        self.targets, self.local, self.keys_of = {}, {}, {}
        self.pulled: set[str] = set()  # entries the remote cache brought in
        self.built: set[str] = set()  # entries a fallback's server built in this run
        self.digests: dict[str, str | None] = {}  # new entry -> its binary's sha256
        # New entry -> the target it is counted for: the first to finish that uses it, so the
        # targets' counts add up to the run's total however many targets share a shape.
        self.counted_for: dict[str, str] = {}

    def _sweep_tmp(self) -> None:
        """Build directories killed runs left in <root>/tmp (tasks/state/sweep.py), at the start of every run."""
        tmp = self.root / "tmp"
        with contextlib.suppress(OSError):
            if not (tmp.is_dir() and any(tmp.iterdir())):  # a no-op run with none stays cheap
                return
        import psutil

        from tasks.state import sweep

        with contextlib.suppress(psutil.Error):
            started = psutil.Process(run_state.MAIN_PID).create_time()
            if swept := sweep.sweep_tmp(self.root, started, 2 * self.session.shape_timeout_s):
                print(f"jitwarm: removed {swept} build directories that killed runs left in {tmp}", flush=True)

    # --- doit's calls -------------------------------------------------------------
    def initialize(self, tasks, selected_tasks):
        run_state.verify_digests = True  # a warm checks every entry it relies on, byte for byte
        self.session = run_state.current()
        chosen, checks = self.session.selection, self.session.checks
        self.shard = str(chosen.shard) if chosen.shard else None
        wanted = {n.removeprefix(PREFIX) for n in _expand(tasks, selected_tasks) if n.startswith(PREFIX)}
        self.cache = self.session.root
        self.root = self.cache.path
        self.before = self._names()
        runs_left = records.state_dir(self.root) / "staging"
        if runs_left.is_dir() and any(runs_left.iterdir()):  # a no-op run with none stays cheap
            from tasks.runner import staging

            staging.sweep(self.cache)  # dead runs' views, at the start of every run
        self._sweep_tmp()
        rows = {}
        for target in chosen.targets:
            if target.name not in wanted:
                continue
            check = checks[target.name]
            stale = not check(None, None)  # computed now, before anything runs: why it is rebuilt
            self.runs[target.name] = report.TargetRun(stale_reasons=list(check.reasons) if stale else [])
            self.targets[target.name] = target
            self.local[target.name] = check.local_keys
            keys = {w.key for w in target.works if check.local_keys is None or w.key in check.local_keys}
            self.keys_of[target.name] = keys
            rows[target.name] = progress.Row(target.name, len(keys))
        # A run that may end as a no-op keeps what it prints, for the next one (tasks/cli/noop.py).
        self.tee = noop.Tee(self.outstream) if noop.recording() else None
        self.display = progress.create(self.tee or self.outstream, rows, lambda: len(self._new()))
        self.display.start()
        run_state.listen(self.on_event)

    def write(self, text):
        if self.display is not None:
            self.display.write(text)
        else:
            super().write(text)

    def execute_task(self, task):
        if name := _target(task):
            self.display.running(name)

    def add_success(self, task):
        if name := _target(task):
            self._finish(name)

    def add_failure(self, task, fail):
        name = _target(task)
        if name in self.runs:
            run = self.runs[name]
            run.failed, run.failure = True, fail.get_msg().strip()
            self._finish(name)
            self.display.done(name, "failed", self._kernels(name), run.failure.splitlines()[0] if run.failure else "")
        if fail.report:
            self.failures.append({"task": task, "exception": fail})
            if name not in self.runs:
                self._write_failure(self.failures[-1])
            else:
                for line in run.failure.splitlines()[1:]:
                    self.write(f"  {line}\n")

    def skip_uptodate(self, task):
        if name := _target(task):
            self._finish(name)

    def skip_ignore(self, task):
        if _target(task) is None:
            super().skip_ignore(task)

    def complete_run(self):
        run_state.forget(self.on_event)
        super().complete_run()
        if self.display is None:
            return
        conf = self.session.settings
        wanted = conf.report_json or conf.junit_xml or os.environ.get(summary.ENV)
        appeared = self._names() - self.before
        if conf.remote is not None and appeared:  # the records say what came from the remote
            self.pulled |= report.pulled_entries(list(self.targets.values()), self.root)
        new = self._new()
        cut = self._interrupted()
        result = self.build(new) if wanted else None  # a no-op run with no reports stays cheap
        counts = Counter(r.status for r in self.display.rows.values())
        pulled = f", {len(appeared & self.pulled)} pulled from the remote" if conf.remote is not None else ""
        head = (f"jitwarm: {counts['rebuilt']} rebuilt, {counts['partial']} partial, "
                f"{counts['up to date']} up to date, {counts['failed']} failed; {plural(len(new), 'kernel')} compiled{pulled} in ")
        tail = f"s (cache {self.root})"
        if (self.tee is not None and not wanted and not cut and not new and not appeared and not self.failures
                and not self.runtime_errors and counts["up to date"] == len(self.display.rows)
                and isinstance(self.display, progress.Plain)):
            noop.save(self.tee, head, tail, list(self.runs))
        self.display.stop(f"{head}{time.monotonic() - self.started:.1f}{tail}")
        if result is not None:
            self.publish(result)
        if run_state.interrupted is not None:
            code = run_state.EXIT_ON_SIGNAL.get(run_state.interrupted, 130)
            self.write(f"jitwarm: interrupted by {signal.Signals(run_state.interrupted).name}: "
                       f"{plural(len(cut), 'target')} not finished, counted as failed; exit {code}\n")

    def _interrupted(self) -> list[str]:
        """Targets an interrupt left unfinished: failed, in the summary line and the report alike."""
        cut = []
        for name, run in self.runs.items():
            # By its row, not run.finished: the interrupt may land inside the event that set it.
            if not run.stale_reasons or run.failed or self.display.rows[name].status not in ("waiting", "running"):
                continue
            if self._has_marker(name):
                run.finished = True  # the interrupt came after its marker, before its event: it is warm
                self.display.done(name, "rebuilt", self._kernels(name))
            else:
                run.finished, run.failed, run.failure = False, True, "not finished: the run was interrupted"
                self.display.done(name, "failed", 0, "not finished: the run was interrupted")
                cut.append(name)
        return cut

    # --- the warm's own events ----------------------------------------------------
    def on_event(self, kind: str, data: dict) -> None:
        if kind == "pulled":
            self.pulled.update(data["names"])
        elif kind == "built":  # by a fallback's server, in this run's private view
            self.built.update(data["names"])
        elif kind == "shape_done":
            for name, keys in self.keys_of.items():
                if data["key"] in keys:
                    self.display.shape_done(name, self._kernels(name, finished=False))
        elif kind == "target_ready" and data["name"] in self.runs:
            run = self.runs[data["name"]]
            run.seconds = run.seconds or data["at"] - self.started
            self.display.done(data["name"], "rebuilt", self._kernels(data["name"]))
            run.finished = True  # its marker is written: an interrupt now cannot undo it

    # --- building and writing the report ------------------------------------------
    def _finish(self, name: str) -> None:
        if name not in self.runs:
            return
        run = self.runs[name]
        run.finished = True
        if run.stale_reasons and not run.seconds:
            run.seconds = time.monotonic() - self.started
        if not run.failed:
            status = "up to date" if not run.stale_reasons else (
                "partial" if self.local[name] is not None and not self._has_marker(name) else "rebuilt")
            self.display.done(name, status, self._kernels(name) if run.stale_reasons else 0)

    def _has_marker(self, name: str) -> bool:
        target = self.targets[name]
        return not records.target_reasons(self.cache, name, target.launch_hash, target.plan_hash,
                                          self.session.fingerprint)

    def _kernels(self, name: str, finished: bool = True) -> int:
        """Kernels this run compiled that count for `name`: new entries it uses that no target
        finished before it. A finished target keeps them (`finished`); a running one only shows them."""
        mine = {entry for entry in report.used_entries(self.targets[name], self.root) & self._new()
                if self.counted_for.get(entry, name) == name}
        if finished and self.display.rows[name].status in ("waiting", "running"):  # not yet counted
            self.counted_for.update(dict.fromkeys(mine, name))
        return len(mine)

    def _new(self) -> set[str]:
        """Entries this run compiled so far: those that appeared, less those pulled and those
        a concurrent run (or an orphan) built into the same root."""
        appeared = self._names() - self.before - self.pulled
        if not appeared:
            return appeared
        mine = builds.shim_builds(self.root, run_state.MAIN_PID, self.started_epoch)
        for name in appeared - self.digests.keys():
            self.digests[name] = builds.entry_digest(entries.cache_dir(self.root) / name, self.cache.layout)
        return {name for name in appeared if name in self.built or self.digests[name] in mine}

    def _names(self) -> set[str]:
        """Entries in the writable root, where every build lands."""
        return entries.names(self.root, self.cache.layout)

    def build(self, new: set[str]) -> report.Report:
        """`new`: the cache entries that appeared during the run."""
        results = []
        for name, run in self.runs.items():  # _interrupted() has judged every unfinished target
            counted = {entry for entry, owner in self.counted_for.items() if owner == name and entry in new}
            results.append(report.target_result(self.targets[name], run, self.cache, new, self.local[name],
                                                self.started_at, counted))
        seconds = time.monotonic() - self.started
        remote = str(self.session.settings.remote) if self.session.settings.remote is not None else None
        failed = any(r.outcome == "failed" for r in results)
        code = run_state.EXIT_ON_SIGNAL.get(run_state.interrupted, 130) if run_state.interrupted else None
        return report.Report(started_at=self.started_at, finished_at=records.now(),
                             exit_code=code or (3 if self.runtime_errors else int(failed)),
                             cache_root=str(self.root), shard=self.shard, fingerprint=self._fingerprint(),
                             totals=report.totals(results, new, seconds, remote), targets=results)

    def _fingerprint(self) -> dict:
        try:
            return dict(self.session.fingerprint)
        except Exception as exc:  # report what we can
            return {"error": f"{exc.__class__.__name__}: {exc}"}

    def publish(self, result: report.Report) -> None:
        conf = self.session.settings
        outputs = [(conf.report_json, report.write, "JSON report"),
                   (conf.junit_xml, _write_junit, "JUnit XML")]
        for path, writer, what in outputs:
            if path is None:
                continue
            try:
                writer(result, path)
                self.write(f"jitwarm: {what} written to {path}\n")
            except Exception as exc:  # the warm's outcome stands whatever happens here
                self.write(f"jitwarm: warning: could not write the {what} to {path}: {exc}\n")
        try:
            summary.append(result)
        except Exception as exc:
            self.write(f"jitwarm: warning: could not append the step summary: {exc}\n")


def _write_junit(result, path) -> None:
    from tasks.report import junit

    junit.write(result, path)


def _target(task) -> str | None:
    return task.name.removeprefix(PREFIX) if task.name.startswith(PREFIX) else None


def _expand(tasks: dict, selected: list[str]) -> set[str]:
    """Selected task names plus the subtasks of selected groups (`warm` means every target)."""
    names = set()
    for name in selected:
        names.add(name)
        task = tasks.get(name)
        if task is not None and task.has_subtask:
            names.update(task.task_dep)
    return names
