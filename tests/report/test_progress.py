"""The progress display (tasks/report/progress.py) reports each target once."""

from __future__ import annotations

import io

from tasks.report import progress


def test_display_done_reports_each_target_once():
    stream = io.StringIO()
    display = progress.Plain(stream, {"a": progress.Row("a", 2), "b": progress.Row("b", 0)})
    display.running("a")
    display.shape_done("a", 3)
    assert display.rows["a"].kernels == 3 and display.rows["a"].shapes_done == 1
    display.done("a", "rebuilt", 7)
    display.done("a", "rebuilt", 7)  # doit's own event after the batch already said so
    display.done("b", "failed", 0, "no GPU")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "jitwarm: [0/2] started a"
    assert lines[1].startswith("jitwarm: [1/2] rebuilt a (2 shapes, 7 kernels compiled, ")
    assert lines[2].startswith("jitwarm: [2/2] failed b (0 kernels compiled, ") and lines[2].endswith(": no GPU")
    assert len(lines) == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_wanted_follows_the_setting_then_the_terminal(monkeypatch):
    monkeypatch.delenv("JITWARM_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.live_wanted(_Terminal()) and not progress.live_wanted(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not progress.live_wanted(_Terminal())
    monkeypatch.setenv("JITWARM_PROGRESS", "live")
    assert progress.live_wanted(io.StringIO())
    monkeypatch.setenv("JITWARM_PROGRESS", "plain")
    monkeypatch.setenv("TERM", "xterm")
    assert not progress.live_wanted(_Terminal())


def test_github_annotation_keeps_a_multiline_message_on_one_line(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    out = io.StringIO()
    display = progress.Plain(out, {"a,b": progress.Row("a,b", 1)})
    display.start()
    display.done("a,b", "failed", 0, "100% bad\r\nsecond line")
    display.stop("end")
    lines = out.getvalue().splitlines()
    assert lines[0] == "::group::jitwarm: 1 target"
    assert "::error title=jitwarm%3A a%2Cb failed::100%25 bad%0D%0Asecond line" in lines
    assert lines[-2:] == ["::endgroup::", "end"]
