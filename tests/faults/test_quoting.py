"""`doit plan` and `doit info` print a fallback's command quoted, so
pasting it runs the server with exactly the launch args, never what they hold."""

from __future__ import annotations

import shlex
import subprocess
import sys

from conftest import REPO, model_file

HOSTILE = ["--served-model-name", "x; touch /tmp/jitwarm-pwned", "--chat-template", "$(id)"]


def test_plan_and_info_quote_the_fallback_command(ws):
    args = ", ".join(f"'{a}'" for a in HOSTILE)  # TOML literal strings
    model_file(ws.models, "v3", f'[[launch]]\ntp = 8\npath = "fallback"\nargs = [{args}]\n')
    plan = subprocess.run([sys.executable, "-m", "doit", "plan", "v3"], cwd=REPO, env=ws.env, capture_output=True,
                          text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    [runs] = [line.split("runs: ", 1)[1] for line in plan.stdout.splitlines() if line.strip().startswith("runs: ")]
    argv = shlex.split(runs)
    assert argv[:3] == ["python", "-m", "sglang.compile_deep_gemm"] and argv[-len(HOSTILE):] == HOSTILE, runs
    [head] = [line for line in plan.stdout.splitlines() if line.strip().startswith("deepseek-ai/")]
    assert shlex.split(head)[-len(HOSTILE):] == HOSTILE, head


def test_info_quotes_the_fallback_command(ws, monkeypatch):
    args = ", ".join(f"'{a}'" for a in HOSTILE)
    model_file(ws.models, "v3", f'[[launch]]\ntp = 8\npath = "fallback"\nargs = [{args}]\n')
    from tasks.cli import doit_tasks

    for key, value in ws.env.items():
        monkeypatch.setenv(key, value)
    doit_tasks.load.cache_clear()
    doit_tasks.selection.cache_clear()
    try:
        [task] = [t for t in doit_tasks.warm_tasks() if t.get("name")]
    finally:
        doit_tasks.load.cache_clear()
        doit_tasks.selection.cache_clear()
    shown = task["meta"]["fallback"]  # what `doit info` prints
    assert shlex.split(shown.split("; runs ", 1)[1])[-len(HOSTILE):] == HOSTILE, shown
