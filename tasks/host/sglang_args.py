"""Compare jitwarm's copy of sglang's argument table with the sglang installed here, for `doit info`.

Importing sglang's server_args pulls torch (seconds), so it runs in a child process and only
when `doit info` prints the line; planning never does it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

from tasks.plan import sglang_table

_DUMP = (
    "import argparse, json\n"
    "from sglang.srt.server_args import ServerArgs\n"
    "from tasks.plan.sglang_table import dump\n"
    "parser = argparse.ArgumentParser()\n"
    "ServerArgs.add_cli_args(parser)\n"
    "print(json.dumps(dump(parser)))\n"
)


def check(timeout_s: float = 120) -> str:
    """One line: whether the installed sglang parses launch args as jitwarm's table does."""
    ours = f"sglang {sglang_table.SGLANG_VERSION}'s table"
    if importlib.util.find_spec("sglang") is None:
        return f"{ours}; sglang is not installed here, so it was not compared"
    try:
        version = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        version = "of unknown version"
    try:
        done = subprocess.run([sys.executable, "-c", _DUMP], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"{ours}; reading the installed sglang {version}'s parser took over {timeout_s:.0f} s, not compared"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{ours}; the installed sglang {version}'s parser could not be read ({last})"
    try:
        theirs = json.loads(done.stdout)
    except json.JSONDecodeError:
        return f"{ours}; the installed sglang {version}'s parser printed something else than its table"
    found = sglang_table.differences(theirs)
    if not found:
        return f"{ours}; agrees with the installed sglang {version}"
    parts = [f"{len(flags)} {kind} ({', '.join(flags[:3])}{', ...' if len(flags) > 3 else ''})"
             for kind, flags in found.items()]
    return (f"{ours} DISAGREES with the installed sglang {version} (launch args are parsed by the table): "
            + "; ".join(parts))
