"""Progress: a live table on a terminal (NO_COLOR honoured), plain lines elsewhere."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from conftest import DODO, model_file

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
DP8 = '[[launch]]\ntp = 8\nargs = ["--dp", "8", "--enable-dp-attention"]\n' + SMALL
COLOR = re.compile(r"\x1b\[[0-9;]*3[0-9](;[0-9]+)*m")  # an SGR foreground colour

def on_terminal(ws, **env) -> tuple[int, str]:
    """Run `doit warm` with a pseudo-terminal as stdout; return its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp,
                            env={**ws.env, "TERM": "xterm-256color", "COLUMNS": "160", **env},
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_live_table_on_a_terminal(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    code, out = on_terminal(ws, FAKE_DG_COMPILE_S="0.3")
    assert code == 0, out
    assert "target" in out and "status" in out and "kernels" in out  # the table header
    assert re.search(r"2/2 targets", out) and "rebuilt" in out
    assert "jitwarm: 2 rebuilt, 0 partial, 0 up to date, 0 failed" in out
    assert "\x1b[" in out  # it is a live display, redrawn in place
    assert COLOR.search(out)  # with colour, unless NO_COLOR (below)


def test_no_color_is_honoured(ws):
    model_file(ws.models, "v3", TP8)
    code, out = on_terminal(ws, NO_COLOR="1")
    assert code == 0, out
    assert "rebuilt" in out and not COLOR.search(out)


def test_plain_lines_off_a_terminal(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    out = ws.doit("warm")
    assert out.returncode == 0
    events = [line for line in out.stdout.splitlines() if line.startswith("jitwarm: [")]
    # Each target starts once (when its action or its first shape in the batch begins), then ends once.
    words = [(e.split()[2], e.split()[3]) for e in events]
    names = {name for _, name in words}
    assert len(names) == 2 and sorted(words) == sorted([("started", n) for n in names] + [("rebuilt", n) for n in names])
    assert events[0].startswith("jitwarm: [0/2] started ")
    assert "\x1b[" not in out.stdout
    again = ws.doit("warm")
    assert sum(line.startswith("jitwarm: [") and " up to date " in line for line in again.stdout.splitlines()) == 2


def test_parallel_doit_reports_each_target_once(ws):
    model_file(ws.models, "v3", TP8 + DP8)
    out = ws.doit("-n", "2", "warm")
    assert out.returncode == 0, out.stdout + out.stderr
    ends = [line for line in out.stdout.splitlines() if line.startswith("jitwarm: [") and " rebuilt " in line]
    assert len(ends) == 2 and len({line.split()[3] for line in ends}) == 2, out.stdout  # forked workers stay silent
    assert "jitwarm: 2 rebuilt, 0 partial, 0 up to date, 0 failed" in out.stdout
