"""What bench scripts measure beside the wall: the shim's nvcc runs and the machine's busy cores."""

import os
import threading
import time
from pathlib import Path


def nvcc_profile(logs: list[Path], cores: int, t0: float) -> dict:
    """How busy the shim's nvcc runs kept the cores: their count and summed seconds; the
    seconds from the warm's start to the first and last nvcc start and the last end; the
    mean number running between the first start and the last end; and the seconds in that
    span with fewer than half the cores compiling (kernels found late, or none left)."""
    spans = []
    for log in logs:
        for row in log.read_text().splitlines():
            parts = row.split()
            if len(parts) >= 3:
                spans.append((float(parts[1]) - t0, float(parts[2]) - t0))
    if not spans:
        return {}
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running, at, under_half = 0, first, 0.0
    for when, step in events:
        if running < cores / 2:
            under_half += when - at
        running, at = running + step, when
    return {"runs": len(spans), "sum_s": round(sum(b - a for a, b in spans), 1),
            "first_start_s": round(first, 2), "last_start_s": round(max(a for a, _ in spans), 2),
            "last_end_s": round(last, 2), "mean_running": round(sum(b - a for a, b in spans) / (last - first), 1),
            "under_half_cores_s": round(under_half, 2),
            "starts_s": sorted(round(a, 1) for a, _ in spans),
            "durations_s": [round(b - a, 1) for a, b in sorted(spans)]}


class BusyCores:
    """Samples the machine's busy cores from /proc/stat (all processes, not only ours)."""

    PERIOD_S = 0.25

    def __init__(self):
        self.samples: list[tuple[float, float]] = []  # (monotonic, busy jiffies)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _busy_jiffies() -> float | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # less idle and iowait

    def _run(self) -> None:
        while True:
            busy = self._busy_jiffies()
            if busy is not None:
                self.samples.append((time.monotonic(), busy))
            if self.done.wait(self.PERIOD_S):
                break

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        if len(self.samples) < 2:
            return {}
        hz = os.sysconf("SC_CLK_TCK")
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        per_second, mark, last = [], t0, b0
        for t, b in self.samples[1:]:
            if t - mark >= 1 or t == t1:
                per_second.append(round((b - last) / hz / (t - mark), 1))
                mark, last = t, b
        return {"core_seconds": round((b1 - b0) / hz, 1), "mean": round((b1 - b0) / hz / (t1 - t0), 1),
                "per_second": per_second}
