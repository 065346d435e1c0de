"""doit's own `list`, `info` and `forget`, made to tell jitwarm's truth (registered in pyproject.toml).

`list` takes `--shard i/N` as `doit warm` does, and lists that shard's targets and shapes.
`info` of a name that is no task said so with a KeyError traceback (doit 0.37): now one line,
exit 3 as doit's other usage errors. `forget` only dropped doit's database rows, while the
markers in the cache root are what says a target is warm, so a forgotten target stayed up to
date: now it also removes the target's marker and its shapes' records, so the next `doit warm`
proves them again (replays every shape; the kernels in the cache are kept, nothing recompiles
unless an entry is missing).
"""

from __future__ import annotations

import contextlib
import os

from doit.cmd_forget import Forget as DoitForget
from doit.cmd_info import Info as DoitInfo
from doit.cmd_list import List as DoitList
from doit.exceptions import InvalidCommand

from tasks.cli import doit_tasks
from tasks.plan import sharding
from tasks.state import records

PREFIX = "warm:"


class List(DoitList):
    cmd_options = (*DoitList.cmd_options, {
        "name": "shard", "long": "shard", "type": str, "default": "",
        "help": "list only shard i of N (i/N, 1-based), as `doit warm --shard`; default: JITWARM_SHARD"})

    def execute(self, params, args):
        if params["shard"]:
            try:
                sharding.parse(params["shard"], "--shard")
            except sharding.ShardError as exc:
                raise InvalidCommand(str(exc)) from None
            os.environ[sharding.ENV] = params["shard"]  # the tasks load next, reading it as `doit warm` does
        return super().execute(params, args)


class Info(DoitInfo):
    def _execute(self, pos_args, hide_status=False):
        if len(pos_args) == 1 and pos_args[0] not in {t.name for t in self.task_list}:
            raise InvalidCommand(f"unknown task {pos_args[0]!r}; `doit list` shows the targets")
        return super()._execute(pos_args, hide_status)


class Forget(DoitForget):
    def _execute(self, forget_sub, forget_disable_default, forget_all):
        names = {t.name for t in self.task_list}
        unknown = [n for n in self.sel_tasks or [] if n not in names]
        if unknown:
            raise InvalidCommand(f"unknown task {unknown[0]!r}; `doit list` shows the targets")
        result = super()._execute(forget_sub, forget_disable_default, forget_all)
        session, all_targets = doit_tasks.load()
        selected = set(self.sel_tasks or [])
        everything = forget_all or "warm" in selected  # the group task stands for all its targets
        chosen = [t for t in all_targets if everything or f"{PREFIX}{t.name}" in selected]
        root = session.root.path
        for target in chosen:
            with contextlib.suppress(FileNotFoundError):
                records.marker_path(root, target.name).unlink()
            for work in target.works:
                with contextlib.suppress(FileNotFoundError):
                    records.shape_path(root, work.key).unlink()
            self.outstream.write(f"forgot {target.name}'s marker and its {len(target.works)} shape records in "
                                 f"{root}; the next `doit warm` proves it again\n")
        return result
