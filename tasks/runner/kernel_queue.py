"""Kernel compiles off the workers' path: nvcc runs here, at most one per core, while the
workers go on finding kernels.

The nvcc shim (nvcc_shim.sh) of a compile worker that needs a kernel nobody has built
writes a request (the kernel's source and argv) into the queue directory and answers
"busy" at once: the worker defers that call and moves on, so no worker sits in nvcc while
calls remain. Each compile takes the kernel's lock in the shim's store (the shim's own
flock), so a worker that waits for the kernel at the end waits for this compile, and
stores the result as the shim does (cubin, its sha256, a compiled.log line).

Kernels whose source and argv are already known (recipes.py) are queued before the
workers start, longest first: their compiles begin while torch still imports. The ones
the workers find go longest first too, by their last compile time here or, for a kernel
never compiled here, a guess from its source (kernel_source.guess_seconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tasks.runner.child import protocol
from tasks.state import builds, kernel_source, recipes

POLL_S = 0.02  # how often the queue directory is read for new requests, without inotify
WAKE_S = 0.2  # with inotify: how soon a stop is noticed
_PR_SET_PDEATHSIG = 1
try:  # resolved now: the forked child, with other threads' locks frozen, must not dlopen
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


class KernelQueue:
    def __init__(self, store: Path, queue_dir: Path, recipe_dir: Path, env: dict, slots: int, run: int,
                 on_done=None):
        self.store, self.queue_dir, self.recipe_dir = store, queue_dir, recipe_dir
        self.on_done = on_done or (lambda key, ok: None)  # (key, whether its cubin is stored), from any thread
        self.env, self.slots, self.run = env, max(1, slots), run
        self.real = env["JITWARM_REAL_NVCC"]
        self.heap: list[tuple[float, int, str, Path]] = []  # (-expected seconds, order, key, request dir)
        self.seen: set[str] = set()
        self.cond = threading.Condition()
        self.stopping = False
        self.compiled: list[str] = []  # keys this queue built
        self.known: set[str] = set()  # keys queued from recipes before discovery
        self.failed: dict[str, str] = {}  # key -> nvcc's last line (the worker's retry reports it in full)
        self.threads: list[threading.Thread] = []
        self.running: set[subprocess.Popen] = set()  # nvcc runs now, killed by stop()
        self.active = 0  # requests taken off the heap whose on_done has not returned yet
        self.span: list[float] = []  # [first compile's start, last compile's end] (epoch seconds)
        queue_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._watch, name="kernel-queue-watch", daemon=True)]
        self.threads += [threading.Thread(target=self._compile_loop, name=f"kernel-queue-{i}", daemon=True)
                         for i in range(self.slots)]
        for thread in self.threads:
            thread.start()

    def submit_known(self, found: list[recipes.Recipe]) -> None:
        """Queue kernels whose source and argv an earlier warm recorded, longest first."""
        for recipe in found:
            if builds.stored_ok(self.store, recipe.key):
                self.on_done(recipe.key, True)
            else:
                self.known.add(recipe.key)
                self._push(recipe.key, recipe.path, recipe.seconds)

    def stop(self) -> None:
        """End the queue once the workers are done (or the run is cut): what still compiles then
        is a known kernel no worker needed, or a run being interrupted, so it is killed."""
        with self.cond:
            self.stopping = True
            self.heap.clear()
            self.cond.notify_all()
            for proc in self.running:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)  # nvcc and the cicc/ptxas it runs
        with contextlib.suppress(OSError):
            (self.queue_dir / ".stop").touch()  # wakes the watch's inotify read now
        for thread in self.threads:
            thread.join()

    def idle(self) -> bool:
        """Whether nothing is compiling or being reported (on_done), queued, or requested and not yet seen."""
        with self.cond:
            if self.heap or self.active:
                return False
        with contextlib.suppress(OSError):
            return all(name.startswith(".") or name in self.seen for name in os.listdir(self.queue_dir))
        return True

    def note(self) -> dict:
        """For the summary: kernels compiled here, how many from known recipes, and which of
        those known kernels the workers did not need after all (a recipe that no longer keys
        as deep_gemm does: the warm then found and compiled the real ones)."""
        built = set(self.compiled)
        return {"compiled": len(built), "known": len(self.known), "known_compiled": len(built & self.known),
                "failed": len(self.failed), "seconds": round(self.span[1] - self.span[0], 3) if self.span else 0.0}

    def _push(self, key: str, request: Path, seconds: float) -> None:
        with self.cond:
            if key in self.seen:
                return
            self.seen.add(key)
            heapq.heappush(self.heap, (-seconds, len(self.seen), key, request))
            self.cond.notify()

    def _watch(self) -> None:
        """Requests arrive by rename (the shim's `mv -T`): inotify wakes this at once; where it
        cannot be had, the directory is read every POLL_S."""
        notify = None
        with contextlib.suppress(ImportError, OSError):
            from inotify_simple import INotify, flags

            notify = INotify()
            notify.add_watch(str(self.queue_dir), flags.MOVED_TO | flags.CREATE)
        try:
            while not self.stopping:
                with contextlib.suppress(OSError):
                    for request in self.queue_dir.iterdir():
                        key = request.name
                        if not key.startswith(".") and key not in self.seen:
                            self._push(key, request, recipes.expected_seconds(self.recipe_dir, key)
                                       or _guess(request))
                if notify is None:
                    time.sleep(POLL_S)
                else:
                    notify.read(timeout=int(WAKE_S * 1000))
        finally:
            if notify is not None:
                notify.close()

    def _compile_loop(self) -> None:
        while True:
            with self.cond:
                while not self.heap and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                _, _, key, request = heapq.heappop(self.heap)
                self.active += 1
            try:
                stored = False
                try:
                    stored = self._compile(key, request)
                except Exception as exc:  # a request gone or unreadable: the worker's own retry compiles it
                    self.failed[key] = f"{exc.__class__.__name__}: {exc}"
                if key in self.failed:  # the workers waiting for it compile it themselves, and see why it fails
                    with contextlib.suppress(OSError):
                        protocol.queue_failed(self.queue_dir, key).touch()
                if not self.stopping:
                    self.on_done(key, stored)
            finally:
                with self.cond:
                    self.active -= 1

    def _compile(self, key: str, request: Path) -> bool:
        """Whether the store holds the kernel's cubin after it."""
        with open(self.store / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the shim's lock: a worker compiling it in the foreground ends first
            if builds.stored_ok(self.store, key):
                return True
            work = self.queue_dir / f".build.{key}"
            work.mkdir(exist_ok=True)
            source, out = work / "kernel.cu", work / "kernel.cubin"
            source.write_bytes((request / "kernel.cu").read_bytes())
            argv = recipes.fill(recipes.read_argv(request), source, out)
            started = time.time()
            with self.cond:
                if self.stopping:
                    return False
                proc = subprocess.Popen(["/bin/sh", "-c", _GROUP_GUARD, self.real, *argv], cwd=work, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        process_group=0, preexec_fn=_die_with_parent)
                self.running.add(proc)
            try:
                _, stderr = proc.communicate()
            finally:
                with self.cond:
                    self.running.discard(proc)
            ended = time.time()
            with self.cond:
                self.span = [min(self.span[0], started), max(self.span[1], ended)] if self.span else [started, ended]
            if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
                lines = stderr.decode(errors="replace").strip().splitlines()
                self.failed[key] = lines[-1] if lines else f"nvcc exited {proc.returncode}"
                return False
            digest = builds.file_digest(out)
            if digest is None:
                self.failed[key] = f"{out}: not readable"
                return False
            recipes.save(self.recipe_dir, key, request, started, ended, digest)  # first: a stored cubin has its recipe
            builds.store_cubin(self.store, key, out, digest, started, ended, self.run)
            self.compiled.append(key)
            return True


def _guess(request: Path) -> float:
    """A kernel no warm here has compiled: its nvcc time guessed from its source."""
    try:
        return kernel_source.guess_seconds((request / "kernel.cu").read_text(errors="replace"))
    except OSError:
        return 0.0


# Each nvcc runs under a shell that leads its own process group: told TERM (by stop(), or by the
# kernel when `doit warm` dies, even under `kill -9`), it kills the group, nvcc's cicc and ptxas too.
_GROUP_GUARD = 'trap "kill -KILL 0" TERM; "$0" "$@" & wait $!'


def _die_with_parent() -> None:
    """In the child, before exec: TERM when `doit warm` dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
