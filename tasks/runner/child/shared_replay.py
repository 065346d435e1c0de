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
from a later piece, and a broken CUDA context goes with it. The zygote starts another
process for the pieces left; the parent reads the pieces' results (tasks/runner/shared.py).
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from tasks.runner.child import replay
from tasks.runner.child.protocol import EnvironmentProblem, PieceResult, SharedProcessJob, SharedSpec, piece_path
from tasks.plan.text import one_line
from tasks.state import records


def _failed_flag(spec: SharedSpec, s: int) -> Path:
    return Path(spec.dir) / f"failed-{s}"


def run(spec: SharedSpec, job: SharedProcessJob, take, slot) -> int:
    """A process's body: replay pieces from `take()` until none are left (or one fails or
    compiles). `slot` = [piece now running or -1, when it began, pieces taken], read by the
    zygote to time pieces out and to tell which piece a dead process was on."""
    view = replay.prepare(spec.cache, Path(job.staging))
    began = time.monotonic()
    replay.start_device(spec.module)
    print(f"device ready in {time.monotonic() - began:.2f}s", flush=True)
    current: tuple[int, object] | None = None  # shape index, executor: one shape's buffers at a time
    landed: set[int] = set()  # shapes whose entries this process's view holds
    while (i := take()) is not None:
        s, first, count = spec.pieces[i]
        shape = spec.shapes[s]
        if _failed_flag(spec, s).exists():  # another piece of it failed: the shape is lost anyway
            records.write_json(piece_path(spec, i), PieceResult(log=job.log, skipped=True))
            continue
        with slot.get_lock():  # a wait below counts towards the piece's timeout
            slot[0], slot[1], slot[2] = i, time.monotonic(), slot[2] + 1
        if s not in landed and spec.ready and spec.ready[s]:
            _wait_for(Path(spec.ready[s]))
            view.refresh()
            landed.add(s)
        print(f"piece {i}: shape {s} {shape.shape.kind} N={shape.shape.n} K={shape.shape.k} "
              f"calls {first}..{first + count - 1}", flush=True)
        started = time.monotonic()
        try:
            if current is None or current[0] != s:
                _release(current)
                current = None
                current = (s, replay.executor_for(spec.module, shape.shape, shape.m_values, spec.contig_alignment))
            launches = replay.sweep(current[1], shape.m_values[first:first + count], view)
            opened, created = view.checkpoint()
        except EnvironmentProblem:
            raise  # the zygote reports it for every piece left
        except Exception as exc:
            traceback.print_exc()
            _failed_flag(spec, s).touch()
            records.write_json(piece_path(spec, i), PieceResult(log=job.log, error=one_line(exc, 300)))
            return 0
        seconds = round(time.monotonic() - started, 3)
        print(f"  {count} calls in {seconds}s", flush=True)
        records.write_json(piece_path(spec, i), PieceResult(
            log=job.log, opened=sorted(opened), created=sorted(created), calls=count, launches=launches,
            seconds=seconds, sees_opens=view.sees_opens))
        with slot.get_lock():
            slot[0] = -1
        if created:
            return 0
    return 0


def _wait_for(ready: Path) -> None:
    """Until the parent has written this shape's entries from their known sources."""
    waited = time.monotonic()
    while not ready.exists():
        time.sleep(0.01)
    print(f"entries in after {time.monotonic() - waited:.2f}s", flush=True)


def _release(current) -> None:
    release = getattr(current[1], "release", None) if current else None
    if release is not None:
        release()
