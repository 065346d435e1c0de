"""jitwarm: `doit warm` pre-warms DeepGEMM's JIT cache for every target in models/.

`doit list` shows each target as (U)p to date or needing a (R)un; `doit info warm:<target>`
says why. Planning here never imports torch or deep_gemm.
"""

import os
import signal
import sys


def _interrupted_early(signum, frame):
    """Until doit_tasks installs the real handlers (after the heavy imports), and for a whole no-op
    run: no target has started, so one line and the signal's exit code, no traceback."""
    name = signal.Signals(signum).name
    sys.stdout.write(f"jitwarm: interrupted by {name} before any target started; exit {128 + signum}\n")
    sys.stdout.flush()
    os._exit(128 + signum)


signal.signal(signal.SIGINT, _interrupted_early)
signal.signal(signal.SIGTERM, _interrupted_early)

from tasks.cli import noop  # noqa: E402

noop.usable_db()
_stamp = noop.replay()
if _stamp is not None:
    # Nothing the last no-op warm read has changed: answer as it did (tasks/cli/noop.py).
    DOIT_CONFIG = noop.doit_config(_stamp)

    def task_warm():
        """Warm every stale (model, tp, launch args) target."""
        yield from noop.tasks(_stamp)

else:
    noop.record()
    from doit import task_params

    from tasks.cli import doit_tasks

    DOIT_CONFIG = doit_tasks.DOIT_CONFIG
    doit_tasks.install_interrupts()
    doit_tasks.report_group_failures_as_failures()

    @task_params([{"name": "shard", "long": "shard", "type": str, "default": "",
                   "help": "warm only shard i of N (i/N, 1-based); default: JITWARM_SHARD, else everything"}])
    def task_warm(shard=""):
        """Warm every stale (model, tp, launch args) target."""
        yield from doit_tasks.warm_tasks(shard)

    def task__shape():
        """Private: one GEMM shape over its M list, shared by every target that needs it."""
        yield from doit_tasks.shape_tasks()
