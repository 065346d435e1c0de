"""Which new cache entries this run built itself, as opposed to a concurrent run or an
orphan writing into the same root.

Every compile of a planned shape goes through the nvcc shim (tasks/runner/nvcc_shim.sh),
which logs `<key> <start> <end> <run>` to its store's compiled.log and keeps the cubin as
`<key>.cubin`; <run> is the pid of the `doit warm` whose pool ran it (JITWARM_RUN). A new entry is this
run's build when its binary is one of those cubins (deep_gemm publishes nvcc's output
as is). Fallback targets build through the server in a private view, which reports them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from tasks.state import records


def shim_builds(root: Path, run: int, since: float) -> set[str]:
    """sha256 digests of the cubins the shim built for `run` (a pid) since `since` (epoch seconds)."""
    digests = set()
    for log in (records.state_dir(root) / "kstore").glob("*/compiled.log"):
        with contextlib.suppress(OSError):
            for line in log.read_text().splitlines():
                fields = line.split()
                if len(fields) == 4 and fields[3] == str(run) and _float(fields[1]) >= since:
                    if (digest := _stored_digest(log.parent / f"{fields[0]}.cubin")) is not None:
                        digests.add(digest)
    return digests


_stored: dict[Path, str] = {}  # store cubin -> digest: the shim never rewrites one (it renames it in once)


def _stored_digest(path: Path) -> str | None:
    if path not in _stored and (digest := file_digest(path)) is not None:
        _stored[path] = digest
    return _stored.get(path)


def file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def entry_digest(entry: Path, layout) -> str | None:
    described = layout.describe(entry)
    return file_digest(Path(entry) / described["binary"]) if described else None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0


def stored_ok(store: Path, key: str) -> bool:
    """Whether the shim's store holds `key`'s cubin with its recorded digest (as nvcc_shim.sh checks)."""
    digest = file_digest(store / f"{key}.cubin")
    try:
        return digest is not None and (store / f"{key}.sha256").read_text().split()[0] == digest
    except (OSError, IndexError):
        return False


def store_cubin(store: Path, key: str, cubin: Path, digest: str, started: float, ended: float, run: int) -> None:
    """Put a compiled cubin (of sha256 `digest`) in the shim's store as the shim does: the
    digest file, then the cubin, each by rename; then its compiled.log line."""
    for name, data in ((f"{key}.sha256", f"{digest}  -\n".encode()), (f"{key}.cubin", cubin.read_bytes())):
        scratch = store / f".{key}.{name.rsplit('.', 1)[1]}.{os.getpid()}"  # no fsync: the digest is checked at use
        scratch.write_bytes(data)
        os.replace(scratch, store / name)
    with open(store / "compiled.log", "a") as log:
        log.write(f"{key} {started:.6f} {ended:.6f} {run}\n")
