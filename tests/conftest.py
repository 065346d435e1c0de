"""Shared helpers: run doit on dodo.py against a temporary registry and cache root."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "fakes"
DODO = REPO / "dodo.py"

# pytest keeps the test modules it rewrote (assert rewriting) only where bytecode may be
# written: under PYTHONDONTWRITEBYTECODE=1, as on CI's machine, each of the seven pytest
# processes rewrote every test module again (collection 1.7 s, 0.8 s from the cache).
sys.dont_write_bytecode = False

V3_CONFIG = (REPO / "models" / "deepseek-v3-0324.toml").read_text().split("[[launch]]")[0]


def make_entry(root: Path, name: str, layout: str = "0.1.x", binary: bytes | None = b"\x7fCUBIN",
               source: str | None = "code", committed: bool = True) -> Path:
    """A cache entry as the layout writes it (0.2.x adds meta.json and `.committed`)."""
    entry = Path(root) / "cache" / name
    entry.mkdir(parents=True)
    if source is not None:
        (entry / "kernel.cu").write_text(source)
    if binary is not None:
        (entry / "kernel.cubin").write_bytes(binary)
    if layout == "0.2.x":
        (entry / "meta.json").write_text('{"command": "nvcc"}')
        if committed:
            (entry / ".committed").write_text("")
    return entry


def cache(path: Path, layout: str = "0.1.x", *readonly: Path):
    from tasks.state import layouts
    from tasks.state.cacheroot import CacheRoot

    return CacheRoot(Path(path), "test", layouts.by_id(layout), tuple(Path(p) for p in readonly))


def newer_nvcc(ws):
    """The stand-in nvcc, reporting release 13.1 (deep_gemm keys every kernel on its version)."""
    newer = ws.tmp / "nvcc-13.1"
    newer.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exec printf 'Cuda compilation tools, release 13.1, "
                     f"V13.1.80\\n'\nexec '{FAKES / 'fake_nvcc'}' \"$@\"\n")
    newer.chmod(0o755)
    return newer


def plain_doit(ws: Workspace, *args: str, **env) -> subprocess.CompletedProcess:
    """`doit <args>` with no -f: the commands come from pyproject.toml in the repo root."""
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=REPO, env={**ws.env, **env},
                          capture_output=True, text=True, timeout=120)


def model_file(directory: Path, name: str, launches: str, header: str = V3_CONFIG) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(header + "\n" + launches)
    return path


# The deep_gemm stand-in of each cache layout (tasks/state/layouts.py).
STAND_INS = {"0.1.x": "fake_deep_gemm", "0.2.x": "fake_deep_jit"}


class Workspace:
    """A registry dir, a cache root and the environment that points doit at them."""

    def __init__(self, tmp: Path, layout: str = "0.1.x", exist_ok: bool = False):
        self.tmp, self.layout = tmp, layout
        self.models = tmp / "models"
        self.models.mkdir(exist_ok=exist_ok)
        self.root = tmp / "cache"
        self.compile_log = tmp / "compiles.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SGLANG_", "SGL_", "DG_JIT_", "DJ_JIT_", "FAKE_DG_", "JITWARM_", "GITHUB_",
                                         "NO_COLOR"))}
        self.env.update({
            "JITWARM_MODELS_DIR": str(self.models),
            "DG_JIT_CACHE_DIR": str(self.root),
            "JITWARM_DEEP_GEMM_MODULE": STAND_INS[layout],
            "JITWARM_CACHE_LAYOUT": layout,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES), str(REPO), os.environ.get("PYTHONPATH")])),
            "FAKE_DG_COMPILE_LOG": str(self.compile_log),
            "JITWARM_DOIT_DB": str(tmp / "doit.db"),
            "JITWARM_KILL_GRACE_S": "1",
            "DG_JIT_NVCC_COMPILER": str(FAKES / "fake_nvcc"),
            "JITWARM_HOST_CACHE": str(tmp / "host-cache"),
            # With stand-in compiles of no time, the kernel queue's hand-offs cost the suite a third
            # more time: tests that exercise it (kills, concurrency, the pool, known sources) turn it on.
            "JITWARM_KERNEL_QUEUE": "off",
        })

    def copy_of(self, template: "Workspace") -> "Workspace":
        """This workspace as a copy of `template` (registry, cache root, logs, remote, doit DB).

        The paths the template's records name are rewritten to this workspace's, so the copy
        reads as if it had been warmed here: a cold warm done once per session, not per test.
        """
        shutil.rmtree(self.models)
        shutil.copytree(template.tmp, self.tmp, dirs_exist_ok=True, symlinks=True)
        old, new = str(template.tmp), str(self.tmp)
        for path in self.tmp.rglob("*.json"):
            text = path.read_text()
            if old in text:
                path.write_text(text.replace(old, new))
        return self

    def doit(self, *args: str, cwd: Path | None = None, timeout: float = 120, **env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "doit", "-f", str(DODO), *args],
                              cwd=cwd or self.tmp, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=timeout)

    def concurrent_warms(self, count: int, **env) -> tuple[list[int], list[str]]:
        """`count` `doit warm` processes on this workspace at once: their exit codes and outputs."""
        runs = [subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=self.tmp,
                                 env={**self.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(count)]
        outputs = [r.communicate(timeout=300)[0] for r in runs]
        return [r.returncode for r in runs], outputs

    def compiles(self) -> list[str]:
        """The entries compiled, in order: the stand-ins name each kernel on kernel.cu's first line
        (what the compile log holds), and its entry as deep_gemm keys it under the toolchain."""
        logged = self.compile_log.read_text().split() if self.compile_log.exists() else []
        named = {}
        for source in self.tmp.rglob("kernel.cu"):
            if source.parent.parent.name == "cache":
                with open(source) as fh:
                    named[fh.readline().strip().removeprefix("// entry: ")] = source.parent.name
        return [named.get(ident, ident) for ident in logged]

    def pool_processes(self) -> list:
        """Live pool processes (tasks/runner/child/zygote.py) that work on this workspace's cache root."""
        import psutil

        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "tasks.runner.child.zygote" in (proc.info["cmdline"] or []) and \
                        proc.environ().get("DG_JIT_CACHE_DIR") == str(self.root):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def status(self, **env) -> dict[str, str]:
        """{target: 'U' | 'R'} from `doit list --status`."""
        out = self.doit("list", "--status", "--all", **env)
        assert out.returncode == 0, out.stderr
        rows = [line.split()[:2] for line in out.stdout.splitlines() if line.strip()]
        return {name: flag for flag, name in rows if name.startswith("warm:")}


@pytest.fixture(scope="session")
def template(tmp_path_factory, worker_id):
    """template(layout, name, build) -> a Workspace that `build(ws)` prepared, once per run and
    layout; a test takes its own copy with `ws.copy_of(...)`. The pytest-xdist workers share
    one (under a lock, in their common temporary directory): built per worker, the six of
    them built each template up to six times."""
    import filelock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    made: dict[tuple[str, str], Workspace] = {}

    def get(layout: str, name: str, build) -> Workspace:
        if (layout, name) not in made:
            path = shared / "templates" / f"{name}-{layout}"
            path.parent.mkdir(exist_ok=True)
            built = Path(f"{path}.built")
            with filelock.FileLock(f"{path}.lock"):
                if not built.exists():  # absent, or left half-built by a failed build
                    shutil.rmtree(path, ignore_errors=True)
                    path.mkdir()
                    build(Workspace(path, layout))
                    built.touch()
            made[layout, name] = Workspace(path, layout, exist_ok=True)
        return made[layout, name]

    return get


def warm_v3_tp8(ws: Workspace) -> None:
    model_file(ws.models, "v3", "[[launch]]\ntp = 8\nm_list = [1, 32, 128, 1024]\n")
    assert ws.doit("warm").returncode == 0


@pytest.fixture
def warmed_tp8(ws, template) -> Workspace:
    """`ws` with V3 at TP8 (no launch args, a four-value M list) warmed, no remote: one warm per run."""
    return ws.copy_of(template(ws.layout, "v3-tp8", warm_v3_tp8))


# Scratch space on tmpfs when the machine has room there. The suite creates and deletes
# tens of thousands of small files and directories (workspaces, cache views, staging);
# on ext4, inode allocation among recently deleted inodes took a third of the suite's
# system time (measured with perf on CI's machine kind: 155 s on /tmp, 140 s on /dev/shm).
SCRATCH_TMPFS = Path("/dev/shm")
SCRATCH_MIN_FREE = 1 << 30  # a run leaves ~110 MiB; a container's default 64 MiB /dev/shm is too small


def pytest_configure(config):
    # Bytecode for the code every subprocess imports: where PYTHONDONTWRITEBYTECODE=1 (CI's
    # machine and the GPU image set it), each of the suite's ~900 Python processes parsed
    # jitwarm's modules and the stand-ins afresh.
    if not hasattr(config, "workerinput"):  # once, in the controller, before the workers start
        for path in (REPO / "tasks", FAKES):
            compileall.compile_dir(path, quiet=1)
        compileall.compile_file(DODO, quiet=1)
    if config.option.basetemp or os.environ.get("TMPDIR") or not os.access(SCRATCH_TMPFS, os.W_OK):
        return
    st = os.statvfs(SCRATCH_TMPFS)
    if st.f_bavail * st.f_frsize >= SCRATCH_MIN_FREE:
        os.environ["TMPDIR"] = str(SCRATCH_TMPFS)  # xdist workers and every subprocess inherit it
        tempfile.tempdir = None  # pytest's tmp_path root follows tempfile.gettempdir()


def pytest_generate_tests(metafunc):
    """Modules marked `both_layouts` run each test that uses a workspace once per layout,
    except tests marked `one_layout` (supervision and remote plumbing that no entry touches)."""
    marked = metafunc.definition.get_closest_marker
    if "layout" in metafunc.fixturenames and marked("both_layouts") and not marked("one_layout"):
        metafunc.parametrize("layout", list(STAND_INS), indirect=True)


@pytest.fixture
def layout(request) -> str:
    return getattr(request, "param", "0.1.x")


@pytest.fixture
def ws(tmp_path, layout) -> Workspace:
    return Workspace(tmp_path, layout)


@pytest.fixture(autouse=True)
def _own_host_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the machine's kept tool answers (tasks/host/hostcache.py)."""
    monkeypatch.setenv("JITWARM_HOST_CACHE", str(tmp_path_factory.mktemp("host-cache")))
