"""Child process: sweep one GEMM shape over its M list and report the cache entries it used.

Usage: python -m tasks.worker PLAN.json RESULT.json

The sweep runs against a private view of the cache (`staging`): a directory of hard
links to every complete entry. inotify on that view tells which entries this process
loaded or created, without mixing in other workers' reads. New entries are then
published into the real cache by atomic rename, DeepGEMM's own protocol.

Exit codes: 0 ok; 3 environment problem (one line on stderr); anything else is a crash.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import entries, records

EXIT_ENV = 3


class EnvironmentProblem(Exception):
    """No GPU, no deep_gemm, or a mismatch the planner must know about."""


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    try:
        result = run(plan)
    except EnvironmentProblem as exc:
        print(f"jitwarm worker: {exc}", file=sys.stderr, flush=True)
        return EXIT_ENV
    tmp = Path(argv[2]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, argv[2])
    return 0


def run(plan: dict) -> dict:
    root, staging = Path(plan["root"]), Path(plan["staging"])
    staged = stage(root, staging)
    watcher = EntryWatcher(entries.cache_dir(staging), staged)
    os.environ["DG_JIT_CACHE_DIR"] = str(staging)

    started = time.monotonic()
    executor = _executor(plan)
    m_values = plan["m_values"]
    last_report = started
    for i, m in enumerate(m_values):
        executor.execute(m)
        if i % 256 == 0:
            watcher.drain()
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  {i + 1}/{len(m_values)} M values, m={m}", flush=True)
    executor.sync()
    seconds = time.monotonic() - started

    used, verification = watcher.used()
    created = sorted(name for name in used if name not in staged)
    for name in created:
        entries.publish(entries.cache_dir(staging) / name, root)
    described = {}
    for name in sorted(used):
        desc = entries.describe(entries.cache_dir(root) / name)
        if desc is None:
            raise RuntimeError(f"entry {name} is incomplete after the sweep")
        described[name] = desc
    return {"schema": records.SCHEMA, "entries": described, "new": created, "calls": len(m_values),
            "sweep_seconds": round(seconds, 3), "verification": verification}


def stage(root: Path, staging: Path) -> set[str]:
    """Hard-link every complete entry of `root` into `staging`; return their names."""
    target = entries.cache_dir(staging)
    target.mkdir(parents=True, exist_ok=True)
    names = set()
    for name in entries.complete_entries(root):
        src, dst = entries.cache_dir(root) / name, target / name
        dst.mkdir()
        for child in os.scandir(src):
            if child.is_file(follow_symlinks=False):
                try:
                    os.link(child.path, dst / child.name)
                except OSError:
                    shutil.copy2(child.path, dst / child.name)
        names.add(name)
    return names


class EntryWatcher:
    """Which staged entries get opened, and which new entries appear (inotify)."""

    def __init__(self, cache: Path, staged: set[str]):
        self.cache, self.staged = cache, staged
        self.opened: set[str] = set()
        self.created: set[str] = set()
        self.overflow = False
        self.wd_names: dict[int, str] = {}
        try:
            from inotify_simple import INotify, flags
        except ImportError:
            self.inotify = None
            return
        self.flags = flags
        self.inotify = INotify()
        try:
            self.cache_wd = self.inotify.add_watch(cache, flags.CREATE | flags.MOVED_TO | flags.ONLYDIR)
            for name in staged:
                self.wd_names[self.inotify.add_watch(cache / name, flags.OPEN)] = name
        except OSError as exc:  # e.g. ENOSPC: fs.inotify.max_user_watches is smaller than the cache
            print(f"  inotify unavailable ({exc}); attributing every entry", flush=True)
            self.inotify.close()
            self.inotify = None

    def drain(self) -> None:
        if self.inotify is None:
            return
        for event in self.inotify.read(timeout=0):
            if event.mask & self.flags.Q_OVERFLOW:
                self.overflow = True
            elif event.wd == self.cache_wd and event.name.startswith(entries.PREFIX):
                self.created.add(event.name)
            elif event.wd in self.wd_names and event.name:
                self.opened.add(self.wd_names[event.wd])

    def used(self) -> tuple[set[str], str]:
        self.drain()
        if self.inotify is None or self.overflow:
            # Cannot tell what was read: attribute everything, which errs towards stale.
            everything = self.staged | {p.name for p in self.cache.iterdir() if p.name.startswith(entries.PREFIX)}
            return everything, "all entries attributed (inotify unavailable)"
        return self.opened | self.created, "inotify: entries opened or created by this sweep"


def _executor(plan: dict):
    module = plan["module"]
    try:
        dg = importlib.import_module(module)
    except ImportError as exc:
        raise EnvironmentProblem(f"cannot import {module}: {exc}") from None
    shape, m_values = plan["shape"], plan["m_values"]
    factory = getattr(dg, "jitwarm_executor", None)
    if factory is None:
        from . import executors
        factory = executors.create
    alignment = getattr(dg, "get_mk_alignment_for_contiguous_layout", None)
    if shape["kind"].endswith("_CONTIG") and alignment is not None:
        actual = int(alignment())
        if actual != plan["contig_alignment"]:
            raise EnvironmentProblem(f"{module} aligns contiguous layouts to {actual}, the plan assumed "
                                     f"{plan['contig_alignment']}; update tasks/mlists.CONTIG_ALIGNMENT")
    return factory(dg, shape["kind"], shape["n"], shape["k"], shape["groups"], max(m_values))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
