"""A repeated no-op `doit warm` answers from the last one's stamp (tasks/cli/noop.py), and
anything the answer depends on sends it back through the planner.

A normal no-op rewrites the stamp (a new inode); one answered from it leaves it alone.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shutil
import subprocess
import sys

import pytest

from conftest import DODO, FAKES, Workspace, model_file
from tasks.cli import noop
from tasks.plan import locks, registry

pytestmark = pytest.mark.both_layouts

TP8 = "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n"
TP4 = "[[launch]]\ntp = 4\nm_list = [1, 32, 128, 1024]\n"


def own_nvcc(ws: Workspace) -> None:
    """The workspace's nvcc: a copy of the stand-in in its directory, which a test may replace."""
    nvcc = ws.tmp / "bin" / "nvcc"
    if not nvcc.exists():
        nvcc.parent.mkdir()
        shutil.copy(FAKES / "fake_nvcc", nvcc)
    ws.env["DG_JIT_NVCC_COMPILER"] = str(nvcc)


def warm_v3(ws: Workspace) -> None:
    own_nvcc(ws)
    model_file(ws.models, "v3", TP8)
    assert ws.doit("warm").returncode == 0


@pytest.fixture
def warmed(ws, template) -> Workspace:
    """`ws` warmed, and a stamp saved by a no-op."""
    ws = ws.copy_of(template(ws.layout, "noop-v3", warm_v3))
    own_nvcc(ws)
    for _ in range(3):  # the first no-op may refresh the registry's memo, which saves no stamp
        out = ws.doit("warm")
        assert out.returncode == 0 and " 0 rebuilt" in out.stdout and " 0 failed" in out.stdout, out.stdout
        if stamp(ws).exists():
            return ws
    raise AssertionError(f"no stamp after 3 no-op warms: {out.stdout}{out.stderr}")


def stamp(ws: Workspace):
    return ws.tmp / "doit.db.noop"


def stamp_id(ws: Workspace):
    st = os.stat(stamp(ws))
    return st.st_ino, st.st_mtime_ns


def lines(stdout: str) -> list[str]:
    return [re.sub(r" in [0-9.]+s ", " in Ts ", line) for line in stdout.splitlines()]


def entry_binary(ws: Workspace):
    name = "kernel.cubin"
    return next(p for p in sorted((ws.root / "cache").rglob(name)))


def test_a_repeated_noop_prints_the_same_lines_without_planning(warmed):
    before = stamp_id(warmed)
    normal = warmed.doit("warm", JITWARM_NOOP_STAMP="off")
    again = [warmed.doit("warm") for _ in range(2)]
    assert stamp_id(warmed) == before  # answered from the stamp: not rewritten
    assert all(out.returncode == 0 and not out.stderr for out in again)
    assert lines(again[0].stdout) == lines(again[1].stdout) == lines(normal.stdout)
    assert "1 up to date" in normal.stdout


def change_and_warm(warmed: Workspace, change: str) -> None:
    """Make `change` to what the stamped answer read; the next warm must plan, not replay the stamp."""
    binary = entry_binary(warmed)
    if change == "binary removed":
        binary.unlink()
    elif change == "binary truncated":
        binary.write_bytes(binary.read_bytes()[:-1])
    elif change == "entry removed":
        shutil.rmtree(binary.parent)
    elif change == "marker removed":
        next((warmed.root / "jitwarm" / "markers").glob("*.json")).unlink()
    elif change == "model edited":
        model_file(warmed.models, "v3", TP8 + TP4)
    elif change == "model added":
        model_file(warmed.models, "v3b", TP4)
    elif change == "lock added":  # `doit watch --record` found a shape the plan lacks
        model = warmed.models / "v3.toml"
        launch = registry.load_file(model).launches[0]
        found = locks.Watched(launch=0, launch_hash=launch.hash, recorded_at="2026-12-02T00:00:00+00:00",
                              command="python -m sglang.launch_server --tp 8", sglang=None, deep_gemm=None,
                              shapes=(("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32),))
        locks.path_for(model).write_bytes(locks.with_watched(model, found))
    elif change == "nvcc upgraded":
        nvcc = warmed.env["DG_JIT_NVCC_COMPILER"]
        text = open(nvcc).read().replace("release 13.0, V13.0.88", "release 13.1, V13.1.20")
        with open(nvcc + ".new", "w") as f:
            f.write(text)
        os.chmod(nvcc + ".new", 0o755)
        os.replace(nvcc + ".new", nvcc)
    reference = warmed.doit("list", "--status", "--all").stdout
    out = warmed.doit("warm")
    assert " 0 rebuilt, 0 partial, 1 up to date" not in out.stdout, (change, out.stdout)
    assert re.search(r"^R warm:", reference, re.M), reference
    assert out.returncode in (0, 1), out.stderr


@pytest.mark.parametrize("change", ["binary removed", "binary truncated", "entry removed", "nvcc upgraded"])
def test_what_the_answer_depends_on_in_the_cache_sends_it_through_the_planner(warmed, change):
    """Entry files and the compiler's version text differ by layout (0.2.x: `.committed`, DeepJIT's key)."""
    change_and_warm(warmed, change)


@pytest.mark.one_layout
@pytest.mark.parametrize("change", ["marker removed", "model edited", "model added", "lock added"])
def test_what_the_answer_depends_on_in_the_registry_sends_it_through_the_planner(warmed, change):
    """jitwarm's own files: read the same way whatever the cache layout."""
    change_and_warm(warmed, change)


@pytest.mark.one_layout
def test_a_changed_environment_or_command_line_plans_again(warmed):
    before = stamp_id(warmed)
    out = warmed.doit("warm", SOME_UNRELATED_VARIABLE="1")
    assert out.returncode == 0 and "1 up to date" in out.stdout
    assert stamp_id(warmed) != before  # a normal no-op: it saved its own stamp
    before = stamp_id(warmed)
    listed = warmed.doit("list", "--status", "--all")
    assert re.search(r"^U warm:", listed.stdout, re.M), listed.stdout
    sharded = warmed.doit("warm", "--shard", "1/1")
    assert sharded.returncode == 0 and "1 up to date" in sharded.stdout
    assert stamp_id(warmed) == before  # neither of them may save one


@pytest.mark.one_layout
def test_a_run_that_writes_a_report_saves_no_stamp(warmed, tmp_path):
    report = tmp_path / "report.json"
    for _ in range(3):
        out = warmed.doit("warm", JITWARM_REPORT_JSON=str(report))
        assert out.returncode == 0 and report.exists(), out.stdout + out.stderr
        report.unlink()  # each run writes it anew: none is answered from a stamp


@pytest.mark.one_layout
def test_off_turns_it_off(warmed):
    before = stamp_id(warmed)
    for _ in range(2):
        assert warmed.doit("warm", JITWARM_NOOP_STAMP="off").returncode == 0
    assert stamp_id(warmed) == before


@pytest.mark.one_layout
def test_a_terminal_gets_the_live_table_not_the_stamp(warmed):
    """Same command, environment and files as the stamped no-op, but stdout is a terminal."""
    plain = warmed.doit("warm", TERM="")  # a stamp for exactly this environment ("" is not "dumb")
    before = stamp_id(warmed)
    again = warmed.doit("warm", TERM="")
    assert stamp_id(warmed) == before and lines(again.stdout) == lines(plain.stdout)  # the stamp answers
    main, child = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=warmed.tmp,
                           env={**warmed.env, "TERM": ""}, stdout=child, stderr=child)
    os.close(child)
    shown = b""
    with contextlib.suppress(OSError):  # read while it runs (a full terminal blocks it); EIO at its exit
        while chunk := os.read(main, 65536):
            shown += chunk
    os.close(main)
    assert run.wait(timeout=120) == 0, shown[-2000:]
    assert b"\x1b[" in shown  # the live table's terminal codes, which no stamp holds


@pytest.mark.one_layout
def test_a_recent_change_hidden_from_stat_is_caught_by_content(tmp_path):
    path = tmp_path / "marker.json"
    path.write_text('{"a": 1}')
    kept = noop._signature(str(path), True, False)
    assert noop._unchanged(str(path), True, False, kept + (noop._content(str(path)),))
    assert not noop._unchanged(str(path), True, False, kept + (noop._content(str(path)) ^ 1,))
    listed = noop._signature(str(tmp_path), True, True)
    assert noop._unchanged(str(tmp_path), True, True, listed + (noop._content(str(tmp_path)),))
    assert not noop._unchanged(str(tmp_path), True, True, listed + (noop._content(str(tmp_path)) ^ 1,))


@pytest.mark.one_layout
@pytest.mark.parametrize(("argv", "plain"), [([], True), (["warm"], True), (["-f", "x.py", "warm"], True),
                                             (["--file=x.py"], True), (["list"], False), (["warm", "-n", "2"], False),
                                             (["-n", "2", "warm"], False), (["warm:v3@tp8"], False)])
def test_only_a_plain_warm_takes_the_short_path(argv, plain):
    assert noop._is_plain_warm(argv) is plain


@pytest.mark.one_layout  # the stamp is jitwarm's own file: the layout cannot change it
@pytest.mark.parametrize("damage", [
    lambda s: {**s, "paths": [(p, "yes", listed, sig) for p, _, listed, sig in s["paths"]]},
    lambda s: {**s, "summary": ("only one",), "targets": [1, 2]},
])
def test_a_stamp_of_the_right_key_with_wrong_types_inside_is_no_stamp(warmed, damage):
    # Regression: every warm then exited 3 with a traceback in noop.replay.
    import marshal

    with open(stamp(warmed), "rb") as f:
        saved = marshal.load(f)
    with open(stamp(warmed), "wb") as f:
        marshal.dump(damage(saved), f)
    out = warmed.doit("warm")
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert " 0 rebuilt" in out.stdout
