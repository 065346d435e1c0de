"""doit wiring: task dicts for warm targets and their shared shape tasks.

Staleness is read from markers in the cache root, never from doit's DB, so a killed
run, a second machine or a wiped cache all see the truth.
"""

from __future__ import annotations

import abc
import functools
import os
import signal
import sys
from pathlib import Path

from doit.exceptions import InvalidCommand, TaskFailed

from tasks import session as run_state
from tasks.cli.reporter import WarmReporter
from tasks.host import fingerprint, gpu, hfcache, packages, settings
from tasks.plan import locks, parsememo, registry, sharding, targets
from tasks.session import Session
from tasks.state import cacheroot, layouts, records
from tasks.plan.text import plural

DOIT_CONFIG = {
    "default_tasks": ["warm"],
    "reporter": WarmReporter,
    "continue": True,
    "dep_file": os.environ.get("JITWARM_DOIT_DB", ".doit.db"),
    # Transactional: concurrent warms sharing the DB, or a SIGKILL while doit saves it, left the JSON one
    # truncated ("Invalid JSON data in doit.db"), and every later command failed.
    "backend": "sqlite3",
}


_seen_entries: dict = {}
_seen_generation = -1


def _entries_seen() -> dict:
    """Entry problems looked up by the checks since this process last wrote a record:
    markers list the entries their shapes' records list, and targets share shapes."""
    global _seen_generation
    if _seen_generation != run_state.generation:
        _seen_entries.clear()
        _seen_generation = run_state.generation
    return _seen_entries


class _Check(abc.ABC):
    """A doit uptodate callable that never raises; its repr is the reason `doit info` shows."""

    reasons: list[str] | None = None
    _generation: int | None = None

    def __call__(self, task, values) -> bool:
        # `doit list` and the `warm` group ask twice; nothing changed unless we wrote.
        if self.reasons is not None and self._generation == run_state.generation:
            return not self.reasons
        try:
            self.reasons = self.compute()
        except Exception as exc:  # a crash here would abort the whole doit run
            self.reasons = [f"staleness check failed: {exc.__class__.__name__}: {exc}"]
        self._generation = run_state.generation
        return not self.reasons

    @abc.abstractmethod
    def compute(self) -> list[str]:
        """Reasons the subject is stale; empty when up to date."""

    def __repr__(self) -> str:
        if self.reasons is None:
            return "not checked yet"
        return "; ".join(self.reasons) if self.reasons else "up to date"

    __str__ = __repr__


class TargetCheck(_Check):
    def __init__(self, session: Session, target: targets.Target, local_keys: frozenset[str] | None = None):
        """`local_keys`: under sharding, the target's shapes this shard warms (None: all)."""
        self.session, self.cache, self.name, self.error = session, session.root, target.name, target.error
        self.launch_hash, self.plan_hash = target.launch_hash, target.plan_hash
        self.model, self.launch_index = target.model, target.launch_index
        self.shapes = [(w.name, w.key) for w in target.works]
        self.fallback = target.path == targets.FALLBACK
        self.local_keys = local_keys if local_keys is not None and len(local_keys) < len(self.shapes) else None

    def compute(self) -> list[str]:
        if self.error:
            return [self.error]
        fp = self.session.fingerprint
        reasons = records.target_reasons(self.cache, self.name, self.launch_hash, self.plan_hash,
                                         fp, self.model, self.launch_index, _entries_seen())
        if reasons and self.local_keys is not None:
            # Only part of the target is this shard's job: it holds when that part does.
            return [f"shape {name}: {why[0]}" for name, key in self.shapes
                    if key in self.local_keys and (why := records.shape_reasons(self.cache, key, fp, _entries_seen()))]
        if reasons and self.fallback and (failed := records.fallback_failure(self.cache.path, self.name,
                                                                            self.launch_hash)):
            reasons.append(failed)
        if reasons and reasons[0].startswith("not warmed yet"):
            # Say what stands in the way, not just that no marker exists.
            for name, key in self.shapes:
                shape = records.shape_reasons(self.cache, key, fp, _entries_seen())
                if shape and shape[0].startswith("last warm failed"):
                    reasons.append(f"shape {name}: {shape[0]}")
        return reasons


class ShapeCheck(_Check):
    def __init__(self, session: Session, key: str):
        self.session, self.key = session, key

    def compute(self) -> list[str]:
        return records.shape_reasons(self.session.root, self.key, self.session.fingerprint, _entries_seen())


class AnyStale(_Check):
    def __init__(self, checks: list[TargetCheck]):
        self.checks = checks

    def compute(self) -> list[str]:
        stale = [c.name for c in self.checks if not c(None, None)]
        return [f"{len(stale)} of {plural(len(self.checks), 'target')} stale: {', '.join(stale)}"] if stale else []


@functools.lru_cache(maxsize=1)
def load() -> tuple[Session, list[targets.Target]]:
    """This process's session (tasks/session.py) and every target of the registry."""
    conf = settings.load()
    try:
        layout = layouts.detect(fingerprint.deep_gemm_module())
        root = cacheroot.resolve(layout)
        gpu.declared()
    except (layouts.LayoutError, gpu.DeclaredGpuError) as exc:
        raise SystemExit(f"jitwarm: {exc}") from None
    if problem := registry.problem(conf.models_dir):
        raise SystemExit(f"jitwarm: {problem}")
    session = run_state.start(Session(root, conf, functools.partial(fingerprint.compute, layout)))
    facts = targets.Facts(packages.versions(), hfcache.cached_file, gpu.total_mib())
    specs = parsememo.load(conf.models_dir, records.state_dir(root.path) / "registry.msgpack")
    return session, targets.expand(specs, facts=facts)


@functools.lru_cache(maxsize=4)
def selection(shard_option: str = "") -> tuple[Session, sharding.Selection]:
    """The targets this run covers: all of them, or one shard's (--shard or JITWARM_SHARD)."""
    session, all_targets = load()
    try:
        shard = sharding.from_settings(shard_option, os.environ)
    except sharding.ShardError as exc:
        if exc.from_env:
            raise SystemExit(f"jitwarm: {exc}") from None  # a bad setting: exit 1, as for every JITWARM_*
        raise InvalidCommand(str(exc)) from None
    return session, sharding.select(all_targets, shard)


def warm_tasks(shard_option: str = ""):
    session, chosen = selection(shard_option or "")
    checks = [TargetCheck(session, t, chosen.local_keys[t.name]) for t in chosen.targets]
    session.shard_option, session.selection = shard_option or "", chosen
    session.checks = {c.name: c for c in checks}
    where = f"shard {chosen.shard} of " if chosen.shard else ""
    yield {"basename": "warm", "name": None, "uptodate": [AnyStale(checks)],
           "doc": f"warm every stale target of {where}the registry into {session.root.path}"}
    for target, check in zip(chosen.targets, checks):
        local = check.local_keys
        if target.path == targets.FALLBACK:
            action = (_run_fallback, [target, session])
        else:
            action = (_finish_target, [target, session, local])
        yield {
            "name": target.name,
            "doc": target.doc,
            "actions": [action],
            "task_dep": [shape_task_name(w) for w in target.works if local is None or w.key in local],
            "uptodate": [check],
            "meta": _meta(target, session),
            "verbosity": 2,
        }


def shape_tasks():
    session, _ = load()
    session, chosen = selection(session.shard_option)
    dependents: dict[str, list[targets.Target]] = {}
    for target in chosen.targets:
        local = chosen.local_keys[target.name]
        for work in target.works:
            if local is None or work.key in local:
                dependents.setdefault(work.key, []).append(target)
    for work in targets.shared_works(chosen.targets).values():
        if work.key not in dependents:
            continue  # another shard's shape
        yield {
            "name": work.name,
            "doc": f"{work.shape.kind.value} N={work.shape.n} K={work.shape.k} "
                   f"groups={work.shape.groups}, {len(work.m_values)} M values",
            "actions": [(_enqueue_shape, [work, session, dependents[work.key]])],
            "uptodate": [ShapeCheck(session, work.key)],
            "verbosity": 2,
        }


# Actions import the machinery they drive (processes, psutil, inotify) only when they run,
# so `doit list` and a no-op `doit warm` stay fast.
def _one_line(action):
    """A failed file operation that reaches doit fails the task in one line (path, errno),
    not as a traceback with exit 2; doit goes on with the other targets."""
    @functools.wraps(action)
    def run(*args):
        try:
            return action(*args)
        except OSError as exc:
            return TaskFailed(records.os_problem(exc))
    return run


@_one_line
def _enqueue_shape(work, session, dependents):
    from tasks.runner import batch
    return batch.enqueue(work, session, dependents)


@_one_line
def _finish_target(target, session, local_keys):
    from tasks.runner import batch
    return batch.finish_target(target, session, local_keys)


@_one_line
def _run_fallback(target, session):
    from tasks.runner import fallback
    return fallback.run(target, session)


def shape_task_name(work: targets.ShapeWork) -> str:
    return f"_shape:{work.name}"


def _meta(target: targets.Target, session: Session) -> dict:
    root = session.root
    meta = {"cache roots": Shown(", then ".join(root.lines())), "cache layout": Shown(root.layout.title),
            "model file": _ShownPath(target.source),
            "marker": str(records.marker_path(session.root.path, target.name))}
    if target.error:
        return meta
    meta.update({"path": target.path, "hf_id": target.hf_id, "tp": target.tp, "launch args": list(target.args),
                 "launch args parsed by": _ArgsTableCheck(),
                 "M list": target.m_policy.describe() if target.m_policy else None})
    if target.path == targets.FALLBACK:
        import shlex  # only fallback targets: the no-op path stays lean

        command = shlex.join(targets.fallback_command(target, "python")[1:])
        meta["fallback"] = f"{target.fallback_reason}; runs {command}"
    else:
        meta["shapes"] = [f"{w.name}: {len(w.m_values)} M, {', '.join(target.plan.uses[w.shape])}"
                          for w in target.works]
    if session.settings.remote is not None:
        meta["remote cache"] = RemoteInfo(session.root.path, str(session.settings.remote), target.works)
    if target.lock is not None:
        lock = target.lock
        meta["lock"] = (f"{locks.path_for(target.source).name} captured {lock.captured_at} "
                        f"(sglang {lock.sglang or 'absent'}, {lock.deep_gemm or 'deep_gemm absent'})")
    if target.lock_note:
        meta["lock"] = target.lock_note
    if target.watch_note:
        meta["watch"] = target.watch_note
    return meta


class Shown:
    """A `doit info` value printed whole: pprint would cut a long string in two."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _ShownPath:
    """A model file as `doit info` shows it, resolved only then (resolving costs ~0.1 ms a target)."""

    def __init__(self, path: Path):
        self.path = path

    def __repr__(self) -> str:
        return repr(registry.display_path(self.path))


class _ArgsTableCheck:
    """Whether the installed sglang parses as jitwarm's table does: a child process, run only when shown."""

    def __repr__(self) -> str:
        from tasks.host import sglang_args

        return sglang_args.check()


class RemoteInfo:
    """What the remote cache did for each shape at its last warm, read only when shown."""

    def __init__(self, root: Path, remote: str, works: list[targets.ShapeWork]):
        self.root, self.remote, self.works = root, remote, works

    def lines(self) -> list[str]:
        said, counts = [], {}
        for work in self.works:
            record, _ = records.read_shape(self.root, work.key)
            pull, push = (record.remote.pull, record.remote.push) if record and record.remote else (None, None)
            status = pull.status if pull else "not asked"
            counts[status] = counts.get(status, 0) + 1
            text = f"{work.name}: {status}" + (f" ({pull.detail})" if pull and pull.detail else "")
            if push:
                text += f"; push: {push.status}" + (f" ({push.detail})" if push.detail else "")
            said.append(text)
        total = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        return [f"{self.remote}; at the shapes' last warm: {total or 'no shapes'}", *said]

    def __repr__(self) -> str:
        return repr(self.lines())


def install_interrupts() -> None:
    """Ctrl-C (SIGINT) and a cancelled CI job (SIGTERM) unwind the run, so children end
    cleanly and the reporter counts the unfinished targets as failed; then the process
    exits 130 or 143, after the summary, without a traceback."""
    def interrupt(signum, frame):
        run_state.interrupted = signum
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    previous = sys.excepthook

    def on_uncaught(kind, exc, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, exc, tb)
        import atexit

        atexit._run_exitfuncs()  # what a normal exit would run (the standby pool's stop)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(run_state.EXIT_ON_SIGNAL.get(run_state.interrupted or signal.SIGINT, 130))

    sys.excepthook = on_uncaught


def report_group_failures_as_failures() -> None:
    """Exit 1, not 2, when only targets failed.

    doit fails the `warm` group task with UnmetDependency (an error, exit 2) whenever a
    subtask fails. The subtask failure is already reported; the group adds nothing.
    """
    from doit import runner
    from doit.exceptions import UnmetDependency

    original = runner.Runner._handle_task_error
    if getattr(original, "_jitwarm", False):
        return

    def handle(self, node, base_fail):
        task = node.task
        if isinstance(base_fail, UnmetDependency) and task.has_subtask and not task.actions:
            node.run_status = "failure"
            self.dep_manager.remove_success(task)
            if self.final_result != runner.ERROR:
                self.final_result = runner.FAILURE
            return
        original(self, node, base_fail)

    handle._jitwarm = True
    runner.Runner._handle_task_error = handle
