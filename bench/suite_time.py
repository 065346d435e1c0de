"""How long does the CPU test suite take, next to an earlier checkout of it? (CPU only)

Runs `python -m pytest` (the README's test command, with the checkout's own pytest
configuration) in two checkouts, alternating, and reports each run's pytest time (the
"in N s" pytest prints) and the CPU time of everything it started, and the median ratio.
Machines of one kind differ by up to 1.5x from hour to hour: only alternating runs in one
call compare. Target: pytest time <= 120 s on CI's two cores.

Each checkout needs an environment with its test extras installed, as `.ci/run` makes one:
    git worktree add /tmp/base <rev>; python3 -m venv /tmp/venvb
    (cd /tmp/base && /tmp/venvb/bin/pip install -e '.[test]')

Usage: python bench/suite_time.py --base DIR PYTHON --new DIR PYTHON [--rounds N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(checkout: Path, python: str) -> dict:
    """One `python -m pytest` in `checkout`: its own time line, CPU seconds, and counts."""
    scratch = Path(tempfile.gettempdir()) / f"pytest-of-{os.getuid()}"
    for stale in (scratch, Path("/dev/shm") / scratch.name):  # earlier runs' scratch costs the next
        shutil.rmtree(stale, ignore_errors=True)
    cpu = children_cpu()
    out = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=checkout,
                         capture_output=True, text=True)
    cpu = children_cpu() - cpu
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    seconds = re.search(r" in ([0-9.]+)s", last)
    return {"pytest_s": float(seconds.group(1)) if seconds else None, "cpu_s": round(cpu, 1),
            "summary": last.strip("= "), "exit": out.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", nargs=2, metavar=("DIR", "PYTHON"), required=True)
    parser.add_argument("--new", nargs=2, metavar=("DIR", "PYTHON"), required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sides = {"base": args.base, "new": args.new}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, (checkout, python) in sides.items():
            runs[side].append(run_suite(Path(checkout), python))
            print(side, runs[side][-1], file=sys.stderr, flush=True)
    medians = {side: statistics.median(r["pytest_s"] for r in runs[side] if r["pytest_s"] is not None)
               for side in sides}
    revs = {side: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                                 text=True).stdout.strip() for side, (checkout, _) in sides.items()}
    return emit({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "commits": revs,
        "runs": runs,
        "median_pytest_s": medians,
        "ratio_new_to_base": round(medians["new"] / medians["base"], 3),
    }, args.out)


if __name__ == "__main__":
    sys.exit(main())
