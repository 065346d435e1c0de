"""Fallback warm: run `python -m sglang.compile_deep_gemm` for a target the planner cannot
describe, supervised, and capture the shapes it reports into a lock.

The server runs against a private view of the cache (tasks/state/cacheview.py): the marker
records exactly the entries it loaded or built, and new entries are published by rename.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from doit.exceptions import TaskFailed

from tasks import session as run_state
from tasks.runner import commit
from tasks.host import packages
from tasks.host.settings import REPO_ROOT
from tasks.state.schema import FallbackFailure
from tasks.plan import locks, targets
from tasks.session import Session
from tasks.state import records

# sglang's own warmer stops on these instead of waiting for the timeout.
FAIL_LINES = ("Scheduler hit an exception", "Received sigquit from a child")
TAIL_LINES = 30


def preflight(fp: dict) -> str | None:
    """One line saying why the fallback cannot run here, or None."""
    name = targets.fallback_module()
    if name == targets.FALLBACK_MODULE:
        spec = importlib.util.find_spec("sglang")  # top level only: importing sglang pulls in torch
        where = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
        if where is None or not (where / "compile_deep_gemm.py").is_file():
            return (f"sglang is not installed for {sys.executable}; the fallback path runs "
                    f"python -m {targets.FALLBACK_MODULE}")
        if fp.get("gpu.arch") is None:
            return "no NVIDIA GPU visible (nvidia-smi reported none)"
        return None
    return None if importlib.util.find_spec(name) else f"{name} is not importable for {sys.executable}"


def run(target: targets.Target, session: Session):
    """doit action for a fallback target. Its last failure is kept for `doit stale` and
    `doit info` (a planned target's shapes keep theirs in their records)."""
    if target.error:
        return TaskFailed(target.error)
    result = _run(target, session)
    path = records.fallback_failure_path(session.root.path, target.name)
    with contextlib.suppress(OSError):  # a root that cannot take the note must not hide the failure
        if isinstance(result, TaskFailed):
            records.write_json(path, FallbackFailure(launch_hash=target.launch_hash,
                                                     error=result.message.splitlines()[0], at=records.now()))
        else:
            path.unlink(missing_ok=True)
    return result


def _run(target: targets.Target, session: Session):
    fp = session.fingerprint
    if problem := preflight(fp):
        return TaskFailed(problem)
    from tasks.runner import staging, supervise  # processes, psutil, inotify: only for a real run
    from tasks.state import cacheview

    cache = session.root
    root = cache.path
    log = records.log_path(root, f"fallback-{target.name}")
    view_dir = staging.run_dir(root, "fallback")
    argv = targets.fallback_command(target, sys.executable)
    print(f"[{target.name}] fallback: {shlex.join(argv)} (timeout {target.fallback_timeout_s}s, log {log})",
          flush=True)
    try:
        view = cacheview.CacheView(cache, view_dir)
        outcome = supervise.run(argv, _env(view_dir, target.env), log, target.fallback_timeout_s, cwd=REPO_ROOT,
                                fail_patterns=FAIL_LINES, on_poll=view.drain)
        if outcome.returncode != 0 or outcome.matched or outcome.timed_out:
            return TaskFailed(f"{targets.fallback_module()} {outcome.describe()} (log {log})")
        try:
            used, created, how = view.commit()
        except RuntimeError as exc:
            return TaskFailed(f"{targets.fallback_module()} finished but {exc} (log {log})")
        run_state.emit("built", names=sorted(created))
    finally:
        # Every path, an interrupt included: show what the server said, keep what it built.
        _print_tail(target, log)
        cacheview.salvage(view_dir, cache)

    shapes = locks.parse_log(_lines(log))
    capture = locks.Capture(
        launch=target.launch_index, launch_hash=target.launch_hash, tp=target.tp, args=target.args,
        captured_at=records.now(),
        shapes=tuple(shapes), **packages.versions())
    lock = locks.path_for(target.source)
    records.replace_file(lock, locks.with_capture(target.source, capture))
    # Record the plan the lock now implies, so the target reads as locked and up to date:
    # the server warmed every shape, those of types jitwarm cannot run included.
    plan, unsupported = targets.locked_plan(shapes)
    works = targets.works_for(plan, target.m_policy)
    commit.write_marker(target, cache, fp, used, targets.plan_hash(works, unsupported), path=targets.FALLBACK,
                      lock=str(lock), captured_shapes=[locks.shape_text(s) for s in shapes],
                      new=created, verification=how, seconds={"server": round(outcome.seconds, 3)})
    print(f"[{target.name}] captured {len(shapes)} shapes into {lock}; {len(used)} entries "
          f"({len(created)} new)", flush=True)
    return None


def _env(staging: Path, launch_env: dict[str, str]) -> dict:
    env = {**os.environ, **launch_env}  # the launch's env is the server's, as planning assumed
    env["PYTHONUNBUFFERED"] = "1"
    # sglang derives DG_JIT_CACHE_DIR from SGLANG_DG_CACHE_DIR, after copying SGL_DG_CACHE_DIR
    # over it; point them all at the view, which holds every root's entries.
    env.pop("SGL_DG_CACHE_DIR", None)
    env["SGLANG_DG_CACHE_DIR"] = env["DG_JIT_CACHE_DIR"] = str(staging)
    return env


def _lines(log: Path):
    with open(log, encoding="utf-8", errors="replace") as fh:
        yield from fh


def _print_tail(target: targets.Target, log: Path) -> None:
    from tasks.runner.supervise import log_tail

    tail = log_tail(log, TAIL_LINES)
    print(f"[{target.name}] last {len(tail)} lines of {log}:", flush=True)
    for line in tail:
        print(f"[{target.name}] | {line}", flush=True)
