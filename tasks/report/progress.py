"""What `doit warm` shows while it runs: a live table on a terminal, plain lines elsewhere.

Both take the same calls from the reporter. The live display redraws from a background
thread a few times a second and never blocks the warm; output printed meanwhile
scrolls above it. NO_COLOR is honoured; JITWARM_PROGRESS=plain forces plain lines.
"""

from __future__ import annotations

import os
import time

from tasks.plan.text import plural  # stdlib only, as this module must stay


class Row:
    """One target's line. A plain class: a dataclass costs every doit start a millisecond."""

    def __init__(self, name: str, shapes: int):
        self.name, self.shapes = name, shapes
        self.status = "waiting"  # waiting | running | up to date | rebuilt | partial | failed
        self.shapes_done = self.kernels = 0
        self.began: float | None = None
        self.ended: float | None = None

    def elapsed(self, now: float) -> float:
        if self.began is None:
            return 0.0
        return (self.ended or now) - self.began


class Display:
    """The calls the reporter makes; shared bookkeeping."""

    def __init__(self, stream, rows: dict[str, Row], count_kernels=None):
        """`count_kernels()`: kernels compiled so far in this run, for the live header."""
        self.stream, self.rows, self.started = stream, rows, time.monotonic()
        self.count_kernels = count_kernels
        # Rows leave waiting/running only through done(): counted there, not by summing every
        # row at each event (quadratic: seconds at 10k targets).
        self.finished = sum(r.status not in ("waiting", "running") for r in rows.values())

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start(self) -> None:
        """Begin showing progress (the live display starts its redraw thread here)."""

    def running(self, name: str) -> None:
        row = self.rows[name]
        if row.began is None:
            row.began = time.monotonic()
        row.status = "running"

    def shape_done(self, name: str, kernels: int) -> None:
        row = self.rows[name]
        if row.status == "waiting":  # its shapes are in the batch another target's action runs
            self.running(name)
        row.shapes_done, row.kernels = min(row.shapes, row.shapes_done + 1), kernels

    def done(self, name: str, status: str, kernels: int, detail: str = "") -> None:
        row = self.rows[name]
        if row.status not in ("waiting", "running"):
            return  # already reported (e.g. ready during the batch, then doit's own event)
        row.status, row.kernels, row.ended = status, kernels, time.monotonic()
        self.finished += 1
        # A finished target's time counts from the start of the run, as in the report (under
        # `doit -n`, doit only says a target started once it has ended).
        row.began = row.ended if status == "up to date" else self.started
        if status in ("rebuilt", "partial"):
            row.shapes_done = row.shapes
        self.event(row, detail)

    def event(self, row: Row, detail: str) -> None:
        """A target finished: the plain display prints a line; the live one redraws anyway."""

    def stop(self, summary: str) -> None:
        self.write(summary + "\n")


class Plain(Display):
    """One line per target event, for CI logs. On GitHub Actions the lines fold into one group
    and each failed target is also an error annotation, shown on the run's page."""

    def __init__(self, stream, rows: dict[str, Row], count_kernels=None):
        super().__init__(stream, rows, count_kernels)
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"

    def start(self) -> None:
        if self.github:
            self.write(f"::group::jitwarm: {plural(len(self.rows), 'target')}\n")

    def done(self, name: str, status: str, kernels: int, detail: str = "") -> None:
        fresh = self.rows[name].status in ("waiting", "running")
        super().done(name, status, kernels, detail)
        if self.github and fresh and status == "failed":
            self.write(f"::error title={_escape(f'jitwarm: {name} failed', True)}::{_escape(detail or 'failed')}\n")

    def stop(self, summary: str) -> None:
        if self.github:
            self.write("::endgroup::\n")
        super().stop(summary)

    def running(self, name: str) -> None:
        first = self.rows[name].began is None
        super().running(name)
        if first:
            self.write(f"jitwarm: [{self.finished}/{len(self.rows)}] started {name}\n")

    def event(self, row: Row, detail: str) -> None:
        parts = [plural(row.shapes, "shape")] if row.shapes else []
        if row.status != "up to date":
            parts += [f"{plural(row.kernels, 'kernel')} compiled", f"{row.elapsed(time.monotonic()):.1f}s"]
        extra = f" ({', '.join(parts)})" if parts else ""
        self.write(f"jitwarm: [{self.finished}/{len(self.rows)}] {row.status} {row.name}{extra}"
                   f"{': ' + detail if detail else ''}\n")


class Live(Display):
    """A rich live table: overall progress, then one row per target."""

    def __init__(self, stream, rows: dict[str, Row], count_kernels=None):
        super().__init__(stream, rows, count_kernels)
        self._kernels, self._counted = 0, 0.0
        from rich.console import Console
        from rich.live import Live as RichLive

        self.console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
        self.live = RichLive(console=self.console, get_renderable=self.render, refresh_per_second=4,
                             redirect_stdout=True, redirect_stderr=True, transient=False)

    def start(self) -> None:
        self.live.start()

    def write(self, text: str) -> None:
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = time.monotonic()
        if self.count_kernels is not None and now - self._counted > 0.5:  # a directory scan: not every frame
            self._kernels, self._counted = self.count_kernels(), now
        kernels = self._kernels if self.count_kernels is not None else sum(r.kernels for r in self.rows.values())
        head = Table.grid(padding=(0, 1))
        head.add_row("[bold]jitwarm[/]", ProgressBar(total=max(1, len(self.rows)), completed=self.finished,
                                                     width=30),
                     f"{self.finished}/{plural(len(self.rows), 'target')}", f"{plural(kernels, 'kernel')} compiled",
                     f"{now - self.started:.1f}s")
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for column, justify in (("target", "left"), ("status", "left"), ("shapes", "right"),
                                ("kernels", "right"), ("elapsed", "right")):
            table.add_column(column, justify=justify, style="dim" if column == "elapsed" else None)
        style = {"failed": "red", "rebuilt": "green", "partial": "yellow", "running": "cyan", "up to date": "green"}
        for row in self.rows.values():
            shapes = f"{row.shapes_done}/{row.shapes}" if row.shapes else "-"
            status = f"[{style.get(row.status, 'white')}]{row.status}[/]"
            table.add_row(row.name, status, shapes, str(row.kernels), f"{row.elapsed(now):.1f}s")
        return Group(head, table)

    def stop(self, summary: str) -> None:
        self.live.refresh()
        self.live.stop()
        self.write(summary + "\n")


def _escape(text: str, property_value: bool = False) -> str:
    """A GitHub workflow command's value: %, CR and LF encoded; in a property also : and ,."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def live_wanted(stream) -> bool:
    """Whether `stream` gets the live table rather than plain lines."""
    wanted = os.environ.get("JITWARM_PROGRESS", "auto")
    tty = hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"
    return wanted == "live" or (wanted == "auto" and tty)


def create(stream, rows: dict[str, Row], count_kernels=None) -> Display:
    if live_wanted(stream):
        try:
            return Live(stream, rows, count_kernels)
        except ImportError:
            pass  # rich missing: plain lines still tell the story
    return Plain(stream, rows, count_kernels)
