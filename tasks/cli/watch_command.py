"""`doit watch [--fail] [--record TARGET] -- CMD [ARGS...]`: run CMD with the server's
cache environment and report every DeepGEMM kernel compiled while it ran, with the shape
its source names. Only the real server proves what a warm missed.

  exit      CMD's exit code; with --fail, 1 when anything compiled and CMD itself passed;
            2 for a usage error (CMD is then not run)
  --record  add the missed shapes to TARGET's shape lock ([[watched]]): the next
            `doit warm` builds them, and `doit plan` marks them "(from doit watch)"
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import msgspec
from doit.cmd_base import Command

from tasks.cli.commands import EXIT_USAGE, cache_env

USAGE = "doit watch [--fail] [--record TARGET] -- CMD [ARGS...]"

_opt_fail = {"name": "fail", "long": "fail", "type": bool, "default": False,
             "help": "exit 1 when anything compiled (unless CMD itself failed)"}
_opt_record = {"name": "record", "long": "record", "type": str, "default": "",
               "help": "add the missed shapes to this target's shape lock, so the next doit warm builds them"}


class Watch(Command):
    name = "watch"
    doc_purpose = "run a command and report every DeepGEMM kernel it JIT-compiled, with its shape"
    doc_usage = "[--fail] [--record TARGET] -- CMD [ARGS...]"
    doc_description = (
        "Runs CMD with the cache root variables `doit env` prints (and, with --record, its "
        "SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 when that target is proven warm), watching every cache root with "
        "inotify. Reports each entry that appeared: a line as it appears, a summary line, the JSON report "
        "(watch_report_json / JITWARM_WATCH_REPORT_JSON), JUnit XML (watch_junit_xml / JITWARM_WATCH_JUNIT_XML) "
        "and the GitHub step summary.")
    cmd_options = (_opt_fail, _opt_record)

    def execute(self, params, args):
        argv = list(args)
        if argv[:1] == ["--"]:
            argv = argv[1:]
        if not argv:
            return _usage(f"no command to run; usage: {USAGE}")
        from tasks.host import fingerprint, settings
        from tasks.state import cacheroot, layouts

        conf = settings.load()
        try:
            layout = layouts.detect(fingerprint.deep_gemm_module())
            root = cacheroot.resolve(layout)
        except layouts.LayoutError as exc:
            raise SystemExit(f"jitwarm: {exc}") from None
        env = {**os.environ, **cache_env(root)}
        target = None
        if params["record"]:
            found = _record_target(params["record"])
            if isinstance(found, str):
                return _usage(found)
            session, target = found
            from tasks.cli.commands import server_env

            variables, unproven = server_env(session, [target])
            env.update(variables)
            for why in unproven:
                _say(f"SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 left out: {why}")
        return _watch(argv, env, root, conf, params["fail"], target)


def _watch(argv, env, root, conf, fail: bool, target) -> int:
    from tasks.runner import watch
    from tasks.report import watch as report
    from tasks.state import records

    roots = [str(r) for r in root.roots]
    _say(f"watching {', '.join(roots)} ({root.layout.id}) while running: {shlex.join(argv)}")
    started_at = records.now()
    live: dict = {}  # (root, name) -> its Entry as parsed when it appeared (a removed one keeps it)

    def said(appeared) -> None:
        live[appeared.root, appeared.name] = entry = _entry(appeared, root.layout)
        print(report.entry_line(entry), file=sys.stderr, flush=True)

    try:
        outcome = watch.run(argv, env, roots, root.layout, on_entry=said)
    except watch.WatchError as exc:
        print(f"jitwarm: {exc}", file=sys.stderr)
        return exc.code
    if outcome.watch_problem:
        _say(outcome.watch_problem)
    entries = [_entry(a, root.layout, live.get((a.root, a.name))) for a in outcome.appeared]
    code = outcome.returncode
    exit_code = 1 if fail and entries and code == 0 else code
    result = report.WatchReport(
        started_at=started_at, finished_at=records.now(), command=list(argv), command_exit_code=code,
        exit_code=exit_code, fail_on_compile=fail, layout=root.layout.id, cache_roots=roots,
        seconds=outcome.seconds, entries=entries, missed_shapes=report.missed_shapes(entries),
        watch_problem=outcome.watch_problem)
    for entry in entries:
        if entry.seconds is None or entry.gone:  # the others were said as they appeared
            _say(report.entry_line(entry).removeprefix("jitwarm watch: "))
    if target is not None:
        result.recorded = _record(target, entries, argv)
        if result.recorded.error and result.exit_code == 0:
            result.exit_code = 1
    _publish(result, conf)
    print(report.summary_line(result), file=sys.stderr, flush=True)
    return result.exit_code


def _entry(appeared, layout, seen=None):
    """The report's entry; `seen`: as parsed when it appeared, for one removed since."""
    from tasks.plan import locks
    from tasks.report.watch import Entry
    from tasks.state import kernel_source

    if appeared.gone and seen is not None:
        return msgspec.structs.replace(seen, seconds=appeared.seconds, gone=True)
    source = kernel_source.read(Path(appeared.root) / "cache" / appeared.name)
    return Entry(name=appeared.name, root=appeared.root, layout=layout.id, family=layout.family(appeared.name),
                 template=source.function,
                 kind=source.kind, n=source.n, k=source.k, groups=source.groups,
                 shape=locks.shape_text(source.shape) if source.shape else None, note=source.note,
                 seconds=appeared.seconds, gone=appeared.gone)


def _record_target(name: str):
    """(session, the target) for --record, or a one-line reason it cannot take watched shapes."""
    from tasks.cli.commands import select_targets
    from tasks.plan import targets

    found, problem = select_targets(None, [name])
    if problem:
        return f"--record: {problem}"
    session, _, picked, _ = found
    if len(picked) != 1:
        return (f"--record: {name!r} names {len(picked)} targets ({', '.join(t.name for t in picked)}); "
                f"name one of them")
    target = picked[0]
    if target.error:
        return f"--record: {target.name} cannot be planned: {target.error}"
    if target.path == targets.FALLBACK:
        return (f"--record: {target.name} has no shape list yet (fallback path: {target.fallback_reason}); "
                f"run `doit warm` first, which captures its shapes into a lock, then watch again")
    return session, target


def _record(target, entries, argv):
    """Add the entries' shapes that `target` does not warm yet to its lock's [[watched]]."""
    from tasks.host import packages
    from tasks.plan import locks
    from tasks.report.watch import Recorded
    from tasks.state import records

    lock = locks.path_for(target.source)
    planned = {(s.kind.value, s.n, s.k, s.groups) for s in target.plan.shapes}
    shapes = list(dict.fromkeys((e.kind, e.n, e.k, e.groups) for e in entries if e.shape))
    added = [s for s in shapes if s not in planned]
    result = Recorded(target=target.name, lock=str(lock), added=[locks.shape_text(s) for s in added],
                      already_planned=[locks.shape_text(s) for s in shapes if s in planned])
    for text in result.already_planned:
        _say(f"not recorded: {text} is already in warm:{target.name}'s plan (if `doit stale` says the target "
             f"is warm, the command used an M outside its M list: {target.m_policy.describe()})")
    unnamed = sum(1 for e in entries if not e.shape)
    if unnamed:
        _say(f"not recorded: {unnamed} kernel(s) whose source names no shape")
    if not added:
        return result
    watched = locks.Watched(launch=target.launch_index, launch_hash=target.launch_hash,
                            recorded_at=records.now(), command=shlex.join(argv), shapes=tuple(added),
                            **packages.versions())
    try:
        records.replace_file(lock, locks.with_watched(target.source, watched))
    except (OSError, locks.LockError) as exc:
        result.error = records.os_problem(exc) if isinstance(exc, OSError) else f"could not record into {lock}: {exc}"
        _say(result.error)
        return result
    _say(f"recorded {len(added)} shape(s) into {lock} for warm:{target.name}; the next `doit warm` builds them")
    return result


def _publish(result, conf) -> None:
    from tasks.report import watch as report

    outputs = [(conf.watch_report_json, report.write_json, "JSON report"),
               (conf.watch_junit_xml, report.write_junit, "JUnit XML")]
    for path, writer, what in outputs:
        if path is None:
            continue
        try:
            writer(result, path)
            _say(f"{what} written to {path}")
        except Exception as exc:  # the command's outcome stands whatever happens here
            _say(f"warning: could not write the {what} to {path}: {exc}")
    try:
        report.append_step_summary(result)
    except Exception as exc:
        _say(f"warning: could not append the step summary: {exc}")


def _say(line: str) -> None:
    print(f"jitwarm watch: {line}", file=sys.stderr, flush=True)


def _usage(problem: str) -> int:
    print(f"jitwarm: {problem}", file=sys.stderr)
    return EXIT_USAGE
