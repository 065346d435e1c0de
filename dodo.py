"""jitwarm: `doit warm` pre-warms DeepGEMM's JIT cache for every target in models/.

`doit list` shows each target as (U)p to date or needing a (R)un; `doit info warm:<target>`
says why. Planning here never imports torch or deep_gemm.
"""

from tasks import doit_tasks

DOIT_CONFIG = doit_tasks.DOIT_CONFIG
doit_tasks.install_sigterm_as_interrupt()
doit_tasks.report_group_failures_as_failures()


def task_warm():
    """Warm every stale (model, tp, launch args) target."""
    yield from doit_tasks.warm_tasks()


def task__shape():
    """Private: one GEMM shape over its M list, shared by every target that needs it."""
    yield from doit_tasks.shape_tasks()
