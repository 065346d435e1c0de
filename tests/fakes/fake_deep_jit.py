"""Stand-in for sgl-deep-gemm 0.2.x (DeepJIT), selected by JITWARM_DEEP_GEMM_MODULE=
fake_deep_jit and JITWARM_CACHE_LAYOUT=0.2.x (tests only). The calls and knobs are in
fake_kernels.py; this module is DeepJIT's disk cache, written from its headers in the
sgl-deep-gemm 0.2.3.post2 wheel (deep_jit/cache/disk.hpp, backend/cuda/backend.hpp,
runtime/runtime.hpp, utils/env.hpp, utils/command.hpp):

- Roots: DG_JIT_CACHE_DIR, else DJ_JIT_CACHE_DIR, else $HOME/.dj; a ':'-separated list
  whose first root is writable and the rest read-only; an empty item is an error.
- Lookup: `<root>/cache/<tag>.<digest>/` in each root in order; it exists only when its
  `.committed` does (then its mtime is touched, failures ignored).
- Miss: build in `<first root>/tmp/<uuid>/`: write kernel.cu, run nvcc through a shell as
  `cd <tmp> && <nvcc> <tmp>/kernel.cu --cubin --output-file <tmp>/kernel.cubin <flags>
  --include-path <dir>` (output 2>&1), require a non-empty cubin, write meta.json and an
  empty `.committed`, then rename the directory into the first root's cache/. A lost
  rename race or a failure removes the temporary directory.
- Key: DeepJIT's own (tasks/state/kernel_keys.py, checked against its hash.hpp and parser.hpp)
  over the config's extra signature, the `nvcc --version` text, the flags and the source; not
  the install path. kernel.cu's first line names the kernel whatever the toolchain (`// entry:
  <tag>.<id>`): the stand-in nvcc logs that line. meta.json records the command, the config
  and the compiler as DeepJIT's does.
- nvcc: DG_JIT_NVCC_COMPILER (or DJ_), else $CUDA_HOME/bin/nvcc; there is no NVRTC.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import fake_kernels
from tasks.state import kernel_keys

COMMITTED = ".committed"
INCLUDE = Path(__file__).resolve().parent  # stands in for deep_gemm/include
_loaded: set[str] = set()  # DeepJIT's in-process memory cache
_runtime: dict = {}


def get_mk_alignment_for_contiguous_layout() -> int:
    return 128


def _env(suffix: str) -> str | None:
    return os.environ.get(f"DG_{suffix}") or os.environ.get(f"DJ_{suffix}")


def _roots() -> list[Path]:
    value = _env("JIT_CACHE_DIR")
    if value is None:
        return [Path(os.environ["HOME"]) / ".dj"]
    items = value.split(":")
    if any(not item for item in items):
        raise RuntimeError(f"Assertion error: disk cache path list contains an empty path: {value}")
    return [Path(item) for item in items]


def _shell(command: str) -> str:
    done = subprocess.run(command + " 2>&1", shell=True, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Assertion error: command failed with exit code {done.returncode}:\n"
                           f"{command}\n{done.stdout}")
    return done.stdout


def _nvcc() -> tuple[str, str]:
    """(nvcc path, its --version text), once per process like DeepJIT's runtime."""
    if not _runtime:
        nvcc = _env("JIT_NVCC_COMPILER") or str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin/nvcc")
        if not os.access(nvcc, os.X_OK):
            raise RuntimeError(f"Assertion error: NVCC compiler is not executable: {nvcc}")
        _runtime.update(nvcc=os.path.abspath(nvcc), version=_shell(f"{shlex.quote(nvcc)} --version"))
    return _runtime["nvcc"], _runtime["version"]


def _flags() -> list[str]:
    flags = ["--gpu-architecture=sm_90a", "-O3", f"-std=c++{_env('JIT_CPP_STANDARD') or 20}"]
    if _env("JIT_WITH_LINEINFO") not in (None, "0", "false"):
        flags.append("--generate-line-info")
    return flags


CONFIG = {"python_library_root": str(INCLUDE.parent), "extra_signature": "cutlass-fake",
          "include_dirs": [str(INCLUDE)], "include_prefixes": ["jitwarm_fake/"]}  # no stand-in source includes one
_names: dict[tuple, tuple[str, str]] = {}  # (family, parts) -> (entry name, kernel.cu), once per process


def _entry(family: str, parts: tuple, code: str) -> tuple[str, str]:
    if (family, parts) not in _names:
        _, version = _nvcc()
        body = f"{code}\n// {parts!r} {os.environ.get('FAKE_DG_SALT', '')}\n"
        ident = f"{family}.{hashlib.sha256(body.encode()).hexdigest()[:32]}"
        text = f"// entry: {ident}\n{body}"
        argv = [kernel_keys.SRC, "--cubin", "--output-file", kernel_keys.OUT, *_flags(), "--include-path", str(INCLUDE)]
        _names[(family, parts)] = kernel_keys.deepjit_entry(family, text, argv, kernel_keys.Toolchain(version, CONFIG)), text
    return _names[(family, parts)]


def _build(family: str, parts: tuple, code: str) -> None:
    nvcc, version = _nvcc()
    name, text = _entry(family, parts, code)
    if name in _loaded:
        return
    roots = _roots()
    entry = next((root / "cache" / name for root in roots if (root / "cache" / name / COMMITTED).exists()), None)
    if entry is not None:
        try:
            os.utime(entry / COMMITTED)
        except OSError:
            pass  # a read-only root
    else:
        entry = _compile(roots[0], name, nvcc, version, text)
    with open(entry / "kernel.cubin", "rb") as fh:  # loading reads the binary
        if b"CUBIN" not in fh.read(8):
            raise RuntimeError(f"CUDA error: device kernel image is invalid ({name})")
    _loaded.add(name)


def _compile(root: Path, name: str, nvcc: str, version: str, source: str) -> Path:
    tmp = root / "tmp" / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    committed = False
    try:
        _write(tmp / "kernel.cu", source)
        argv = [nvcc, str(tmp / "kernel.cu"), "--cubin", "--output-file", str(tmp / "kernel.cubin"),
                *_flags(), "--include-path", str(INCLUDE)]
        command = " ".join(argv)  # DeepJIT joins unquoted too
        _shell(f"cd {tmp} && {command}")
        cubin = tmp / "kernel.cubin"
        if not cubin.is_file() or cubin.stat().st_size == 0:
            raise RuntimeError(f"Assertion error: NVCC did not produce a valid CUBIN: {cubin}")
        _write(tmp / "meta.json", json.dumps({"command": command, "config": CONFIG,
                                              "compiler_info": {"path": nvcc, "version": version},
                                              "compiler_options": {"post_hook": None}}))
        _write(tmp / COMMITTED, "")
        final = root / "cache" / name
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            pass  # another process won; use theirs (ours goes below)
        else:
            committed = True
        return final
    finally:
        if not committed:
            shutil.rmtree(tmp, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def jitwarm_executor(dg, kind, n, k, groups, max_m, aligned=False):
    return fake_kernels.executor(_build, kind, n, k, groups, "0.2.x", aligned=aligned)
