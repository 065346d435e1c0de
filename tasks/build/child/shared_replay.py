"""Replay the shapes pulled from the remote cache in a few shared processes.

A pulled shape needs the same proof as a compiled one: every call of its sweep runs and
compiles nothing. Its entries need no attribution, though: the artifact's manifest lists
them, as the pusher's own replay attributed them. So the calls of all pulled shapes are
cut into pieces that a few processes drain together, the way the compile queue is
drained, and each process pays its deep_gemm import and CUDA start-up once instead of
once per shape (CUDA contexts start one after another on a GPU, ~0.15 s each).

A shape's entries are its manifest's, plus any entry its calls opened (inotify) or
created. A piece that creates an entry (its artifact lacked a kernel) or fails ends its
process: nothing loaded only in that process's memory can then hide a missing kernel
from a later piece, and a broken CUDA context goes with it. The pool starts another
process for the pieces left.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path

from tasks.state import entries
from tasks.state import records
from tasks.build.child import replay as worker
from tasks.state.cacheroot import CacheRoot
from tasks.state.cacheview import CacheView

PIECES_PER_PROCESS = 4  # enough to even out the processes' ends; each piece costs a shape switch
# Measured on an H100 host (16 cores, bench/results/replay_procs-h100-2026-11-22.json): n
# processes starting CUDA at once are all ready after ~0.15 s * n (taking turns under a lock
# was no faster: a context took ~0.3 s while the others replayed), and a captured call costs
# ~50 us of host time alone, ~70 us with a dozen processes at once.
CONTEXT_S = 0.15
CALL_S = 60e-6


def processes(calls: int, slots: int) -> int:
    """How many processes replay `calls` fastest: n contexts cost n * CONTEXT_S before any
    work starts, and the calls take calls * CALL_S / n after, least at sqrt(work / CONTEXT_S)."""
    return max(1, min(slots, round(math.sqrt(calls * CALL_S / CONTEXT_S))))


def pieces(lengths: list[int], processes: int, chunk: int) -> list[tuple[int, int, int]]:
    """(shape, first, count) pieces of the shapes' call lists: whole capture chunks, about
    PIECES_PER_PROCESS per process, in shape order."""
    total = sum(lengths)
    size = max(chunk, -(-total // max(1, processes * PIECES_PER_PROCESS)))
    size = -(-size // chunk) * chunk
    return [(s, first, min(size, n - first)) for s, n in enumerate(lengths) for first in range(0, n, size)]


def piece_path(spec: dict, i: int) -> Path:
    return Path(spec["dir"]) / f"piece-{i}.json"


def status_path(spec: dict, i: int) -> Path:
    return Path(spec["dir"]) / f"piece-{i}.status"


def _failed_flag(spec: dict, s: int) -> Path:
    return Path(spec["dir"]) / f"failed-{s}"


def run(spec: dict, job: dict, take, slot) -> int:
    """A process's body: replay pieces from `take()` until none are left (or one fails or
    compiles). `slot` = [piece now running or -1, when it began, pieces taken], read by the
    zygote to time pieces out and to tell which piece a dead process was on."""
    view = CacheView(CacheRoot.from_plan(spec["cache"]), Path(job["staging"]))
    os.environ["DG_JIT_CACHE_DIR"] = str(view.path)
    began = time.monotonic()
    worker.start_device(spec["module"])
    print(f"device ready in {time.monotonic() - began:.2f}s", flush=True)
    current: list = [None, None]  # shape index, executor: one shape's buffers at a time
    while (i := take()) is not None:
        s, first, count = spec["pieces"][i]
        shape = spec["shapes"][s]
        if _failed_flag(spec, s).exists():  # another piece of it failed: the shape is lost anyway
            records.write_json(piece_path(spec, i), {"skipped": True})
            continue
        with slot.get_lock():
            slot[0], slot[1], slot[2] = i, time.monotonic(), slot[2] + 1
        print(f"piece {i}: shape {s} {shape['shape']['kind']} N={shape['shape']['n']} K={shape['shape']['k']} "
              f"calls {first}..{first + count - 1}", flush=True)
        started = time.monotonic()
        try:
            if current[0] != s:
                _release(current[1])
                current[:] = [None, None]
                current[:] = [s, worker._executor({**shape, "module": spec["module"],
                                                   "contig_alignment": spec["contig_alignment"]})]
            launches = worker.sweep(current[1], shape["m_values"][first:first + count], view)
            opened, created = view.checkpoint()
        except worker.EnvironmentProblem:
            raise  # the zygote reports it for every piece left
        except Exception as exc:
            traceback.print_exc()
            _failed_flag(spec, s).touch()
            records.write_json(piece_path(spec, i), {"error": worker.one_line(exc, 300), "log": job["log"]})
            return 0
        seconds = round(time.monotonic() - started, 3)
        print(f"  {count} calls in {seconds}s", flush=True)
        records.write_json(piece_path(spec, i), {
            "opened": sorted(opened), "created": sorted(created), "calls": count, "launches": launches,
            "seconds": seconds, "sees_opens": view.sees_opens, "log": job["log"]})
        with slot.get_lock():
            slot[0] = -1
        if created:
            return 0
    return 0


def _release(executor) -> None:
    release = getattr(executor, "release", None)
    if release is not None:
        release()


def outcome(spec: dict, s: int, expected: list[str], cache: CacheRoot, pool_ended: str | None = None):
    """(status, result or None, log) of pulled shape `s` once each of its pieces has a
    result or a status; None while some are still running. With `pool_ended` (how the
    pool ended), pieces with neither count as not run."""
    found = []
    for i, (shape, _, _) in enumerate(spec["pieces"]):
        if shape != s:
            continue
        result = records.read_json_any(piece_path(spec, i))
        status = None if result is not None else records.read_json_any(status_path(spec, i))
        if result is None and status is None:
            if pool_ended is None:
                return None
            status = {"how": f"did not run: the pool {pool_ended}", "log": spec["pool_log"]}
        found.append((result, status))
    for result, status in found:
        if status is not None:
            return status["how"], None, Path(status["log"])
        if "error" in result:
            return f"failed: {result['error']}", None, Path(result["log"])
    done = [result for result, _ in found if not result.get("skipped")]
    opened = {name for r in done for name in r["opened"]}
    created = sorted({name for r in done for name in r["created"]})
    described = {}
    for name in sorted(set(expected) | opened | set(created)):
        desc = entries.describe(cache, name)
        if desc is None:
            return f"failed: entry {name} is incomplete after the replay", None, Path(spec["pool_log"])
        described[name] = desc
    how = "remote manifest, plus entries its calls opened or created (shared replay processes)"
    if not all(r["sees_opens"] for r in done):
        how = "remote manifest, plus entries its calls created (opens not seen: inotify unavailable)"
    captured = all(r["launches"] == worker.CAPTURED for r in done)
    result = {"schema": records.SCHEMA, "entries": described, "new": created, "calls": sum(r["calls"] for r in done),
              "sweep_seconds": round(sum(r["seconds"] for r in done), 3), "verification": how,
              "launches": "captured, not run (first and last M of each piece run)" if captured else "run",
              "pieces": len(done), "processes": len({r["log"] for r in done})}
    return "exited with code 0", result, Path(done[0]["log"])
