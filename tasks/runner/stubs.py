"""Stub discovery: the compile workers find a cold shape's kernels without waiting for nvcc.

Both cache layouts load a kernel by enumerating the one kernel of its cubin (sgl-deep-gemm
0.1.2's _C.so and DeepJIT's backend/cuda/kernel.hpp call cuLibraryEnumerateKernels), and the
workers only record their calls in CUDA graphs that never run. So a worker's deep_gemm can go
on with a stub cubin (one empty kernel) while the kernel queue compiles the real one: the nvcc
shim requests the kernel, hands back the stub, and leaves the kernel's key in the build
directory. Each worker builds into a scratch cache of its own, so no stub reaches a real root;
there deep_gemm names each entry as it keys it. As each compile lands, the pool writes the real
entry (deep_gemm's own files from the scratch entry, with the real cubin), and a shape's replay
starts once every entry its worker may have used is in. The replay proves it; a shape whose
replay compiles anything is warmed again by plain discovery (batch.py).

A worker makes all of a shape's calls (PoolPlan.bounds), and deep_gemm keeps what it loaded in
memory, so what a shape used is known only as far as "what its worker had found by then": a
shape waits for that, which is exact for a worker's first shape. bench/stub_discovery.py showed
sgl-deep-gemm 0.1.2 finding the same 82 kernels as a cold warm this way, on an H100.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from tasks.state import entries
from tasks.state.cacheroot import CacheRoot

KEY_FILE = "jitwarm.key"  # written by nvcc_shim.sh beside the binary: the kernel's key in the store
LOG = "builds.log"  # in a worker's scratch root: a line per build the shim answered
STUB_SOURCE = 'extern "C" __global__ void jitwarm_stub() {}\n'
ENV = "JITWARM_DISCOVERY"  # "wait" turns stub discovery off: workers wait for the real kernels
WRITE_EVERY_S = 0.2  # how often a worker rewrites its found file while its calls go on


def enabled(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get(ENV, "stubs")
    if value not in ("stubs", "wait"):
        print(f"warning: {ENV}={value!r}: expected 'stubs' or 'wait'; discovering with stubs", flush=True)
    return value != "wait"


def arch_flag(gpu_arch: str | None) -> str | None:
    """nvcc's -arch for the stub from the fingerprint's compute capability ("9.0" -> sm_90a)."""
    try:
        major, minor = (int(part) for part in (gpu_arch or "").split("."))
    except ValueError:
        return None
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


class StubBuild:
    """The stub cubin for this toolchain and GPU, kept in the shim's store; built in the background
    (half a second of nvcc, while torch imports) when the store does not hold it yet."""

    def __init__(self, store: Path, nvcc: str, arch: str | None):
        self.path = store / f"stub-{arch}.cubin"
        self.proc: subprocess.Popen | None = None
        self.problem = "" if arch else "the GPU's compute capability is unknown"
        if arch and not _nonempty(self.path):
            # `.<name>.<pid>` files, as the shim's own copies: the store drops a killed run's by age.
            self.source, self.built = store / f".stub.{os.getpid()}.cu", store / f".stub.{os.getpid()}.cubin"
            try:
                self.source.write_text(STUB_SOURCE)
                self.proc = subprocess.Popen([nvcc, str(self.source), "-cubin", f"-arch={arch}", "-o",
                                              str(self.built)], cwd=store, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                self.problem = f"cannot run {nvcc}: {exc}"

    def result(self) -> Path | None:
        """The stub cubin, or None (see `problem`) when it could not be built."""
        if self.proc is not None:
            _, err = self.proc.communicate()
            if self.proc.returncode == 0 and _nonempty(self.built):
                os.replace(self.built, self.path)
            else:
                lines = err.decode(errors="replace").strip().splitlines()
                self.problem = f"nvcc could not build it: {lines[-1] if lines else f'exit {self.proc.returncode}'}"
            for leftover in (self.source, self.built):
                leftover.unlink(missing_ok=True)
            self.proc = None
        return self.path if not self.problem and _nonempty(self.path) else None


def scratch_roots(cache: CacheRoot, scratch: Path) -> str:
    """DG_JIT_CACHE_DIR for a stub worker: its scratch root first, where its builds go. DeepJIT
    (0.2.x) also searches the real roots after it; 0.1.x takes one root, so every entry the real
    roots hold is linked into the scratch one: entries already built are loaded, not stubbed."""
    (scratch / "cache").mkdir(parents=True, exist_ok=True)
    if cache.layout.multi_root:
        return ":".join([str(scratch), cache.env_value()])
    for root in reversed(cache.roots):  # the writable root's entry wins
        for name in entries.names(root, cache.layout):
            link = scratch / "cache" / name
            if not os.path.lexists(link):
                os.symlink(entries.cache_dir(root) / name, link)
    return str(scratch)


def scan(scratch: Path) -> dict[str, str]:
    """{entry name: kernel key} of the entries a stub worker built (linked real ones carry no key)."""
    found = {}
    try:
        items = list(os.scandir(entries.cache_dir(scratch)))
    except FileNotFoundError:
        return found
    for item in items:
        if item.is_symlink():
            continue
        try:
            found[item.name] = Path(item.path, KEY_FILE).read_text().strip()
        except OSError:
            continue
    return found


class Found:
    """A stub worker's record of what it built and which calls it made, rewritten as they change."""

    def __init__(self, scratch: Path, path: Path, made):
        self.scratch, self.path, self.made = scratch, path, made  # made: {shape: calls}, the worker's
        self.entries: dict[str, str] = {}
        self.size = 0
        self.written = 0.0

    def update(self, force: bool = False) -> None:
        try:  # the shim appends a line for every build: a directory's mtime may not tick between two
            size = os.stat(self.scratch / LOG).st_size
        except OSError:
            size = 0
        changed = size != self.size
        if changed:  # each build was renamed in before its call returned
            self.size, self.entries = size, scan(self.scratch)
        if changed or force or time.monotonic() - self.written >= WRITE_EVERY_S:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps({"entries": self.entries, "made": {str(s): n for s, n in self.made.items()}}))
            os.replace(tmp, self.path)
            self.written = time.monotonic()


class Lander:
    """Writes the real entries of what stub workers found, and each shape's ready file once every
    entry its worker may have used is in. `done` is the kernel queue's callback (its threads);
    `poll` reads the workers' found files (the pool's supervise loop)."""

    def __init__(self, cache: CacheRoot, store: Path, workers: list[tuple[Path, Path]], totals: dict[int, int],
                 ready: dict[int, Path]):
        self.cache, self.store, self.workers, self.totals, self.ready = cache, store, workers, totals, ready
        self.lock = threading.Lock()
        self.seen: dict[int, dict] = {}  # worker -> its found file's last content
        self.template: dict[str, Path] = {}  # entry name -> a scratch entry deep_gemm built
        self.key_of: dict[str, str] = {}  # entry name -> kernel key
        self.landed: dict[str, bool] = {}  # kernel key -> whether its cubin is stored (absent: not yet)
        self.waiting: dict[int, set[str]] = {}  # shape -> entry names it waits for
        self.released: set[int] = set()  # shapes whose ready file is written
        self.written = 0
        self.failed: dict[str, str] = {}  # entry name -> why it was not written

    def poll(self) -> None:
        if len(self.waiting) == len(self.ready):
            return  # every shape is read: what is left lands through `done`
        for w, (_, found) in enumerate(self.workers):
            try:
                self.seen[w] = json.loads(found.read_text())
            except (OSError, ValueError):
                continue
        with self.lock:
            for s, total in self.totals.items():
                if s in self.waiting or s not in self.ready:
                    continue
                makers = [w for w, got in self.seen.items() if got["made"].get(str(s), 0)]
                if sum(self.seen[w]["made"].get(str(s), 0) for w in makers) < total:
                    continue
                names = set()
                for w in makers:
                    scratch = self.workers[w][0]
                    for name, key in self.seen[w]["entries"].items():
                        self.template.setdefault(name, entries.cache_dir(scratch) / name)
                        self.key_of[name] = key
                        names.add(name)
                self.waiting[s] = set(names)
                for key in {self.key_of[name] for name in names} - set(self.landed):
                    if (self.store / f"{key}.cubin").exists():
                        self.landed[key] = True  # stored before this run
            self._land()

    def done(self, key: str, stored: bool) -> None:
        with self.lock:
            self.landed[key] = stored
            self._land()

    def finish(self) -> None:
        """Every worker has ended and the queue is idle: whatever still waits will not land, so each
        shape's replay starts and reports what is missing."""
        with self.lock:
            for s in self.ready:
                self.waiting[s] = set()
                self._release(s)

    def _land(self) -> None:
        for s, left in self.waiting.items():
            for name in [n for n in left if self.key_of[n] in self.landed]:
                left.discard(name)
                if self.landed[self.key_of[name]]:
                    self._write(name)
                else:
                    self.failed.setdefault(name, "its compile failed")
            if not left:
                self._release(s)

    def _release(self, s: int) -> None:
        if s not in self.released:
            self.released.add(s)
            with contextlib.suppress(OSError):  # unwritable: the run's own directory is gone
                self.ready[s].touch()

    def _write(self, name: str) -> None:
        if name in self.failed or entries.locate(self.cache, name) is not None:
            return
        try:
            if entries.adopt(self.cache, self.template[name], self.store / f"{self.key_of[name]}.cubin",
                             leave=(KEY_FILE,)):
                self.written += 1
        except OSError as exc:  # its replay compiles it; the shape is then warmed by plain discovery
            self.failed[name] = str(exc)


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
