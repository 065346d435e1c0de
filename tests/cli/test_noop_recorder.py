"""The no-op stamp's recorder (tasks/cli/noop.py) stops noting once the run can no longer save a stamp."""

import subprocess
import sys

from conftest import REPO

PROBE = """
import os, subprocess, sys
sys.argv = ["doit", "warm"]
from tasks.cli import noop
real = os.stat
noop.record()
rec = noop._recorder
assert os.stat is not real and rec.active
os.stat("/")
assert "/" in rec.paths
subprocess.run(["true"])  # a run that starts a process can never be replayed from a stamp
assert os.stat is real and not rec.active and rec.vetoed == "subprocess.Popen", rec.vetoed
before = len(rec.paths)
os.stat("/usr"); os.listdir("/usr"); open("/etc/hostname").close()
assert len(rec.paths) == before, "noted paths after the veto"
print(noop.save(noop.Tee(sys.stdout), "", "", []))
"""


def test_a_vetoed_run_stops_noting_and_says_why_it_saves_no_stamp(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JITWARM_DOIT_DB": str(tmp_path / "db")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "subprocess.Popen"
