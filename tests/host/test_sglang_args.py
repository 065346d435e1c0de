"""`doit info` compares the table with an installed sglang's own parser, in a child process."""

import sys

from tasks.host import sglang_args
from tasks.plan import sglang_table


def _fake_sglang(root, body):
    pkg = root / "sglang" / "srt"
    pkg.mkdir(parents=True)
    (root / "sglang" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "server_args.py").write_text(body)
    info = root / "sglang-0.5.99.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 0.5.99\n")


def test_no_sglang_installed_says_it_was_not_compared(monkeypatch):
    monkeypatch.setattr(sglang_args.importlib.util, "find_spec", lambda name: None)
    assert sglang_args.check() == "sglang 0.5.23's table; sglang is not installed here, so it was not compared"


def test_an_installed_sglang_that_parses_differently_is_named(tmp_path, monkeypatch):
    _fake_sglang(tmp_path, "class ServerArgs:\n    @staticmethod\n    def add_cli_args(parser):\n"
                           "        parser.add_argument('--tp-size', type=int)\n"
                           "        parser.add_argument('--brand-new', action='store_true')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(p for p in sys.path if p)}")
    line = sglang_args.check()
    assert line.startswith("sglang 0.5.23's table DISAGREES with the installed sglang 0.5.99 ")
    assert "1 only in the installed sglang (--brand-new)" in line
    assert "530 only in jitwarm's table (--abort-on-priority-when-disabled, " in line and "1 parsed differently (--tp-size)" in line
    assert "\n" not in line


def test_an_installed_sglang_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    _fake_sglang(tmp_path, "import torch_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(p for p in sys.path if p)}")
    line = sglang_args.check()
    assert "the installed sglang 0.5.99's parser could not be read (ModuleNotFoundError" in line


def test_the_table_agrees_with_itself():
    assert sglang_table.differences(sglang_table.table()["options"]) == {}
