"""Pack a shape's cache entries into one archive, and unpack one without trusting it.

An archive is a tar of `<entry>/<file>` members (entries named as the cache's layout
names them), zstd-compressed when the `zstandard` package is present. Its manifest lists
every file's sha256 and size. Packing is deterministic (sorted names, zero times and
owners), so two runners that built the same kernels push the same bytes.

Unpacking refuses anything but plain files and directories under entry names of the
layout (no absolute paths, `..`, links or devices), and only the files such an entry holds;
checks every file against the manifest, and publishes each entry into the writable root by
atomic rename (tasks/entries.py), never replacing a complete one. What it may unpack is
bounded before it starts, from the manifest (which the members must match): each file's size
(a kernel's binary at most 64 MiB, its source 8 MiB, the rest 64 KiB), the archive's total
(1 GiB) and its expansion (at most 100 times the archive's size beyond the first 16 MiB), so a
small archive cannot fill the disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path, PurePosixPath

from tasks.state import entries
from tasks.state.cacheroot import CacheRoot

TAR, TAR_ZSTD = "tar", "tar+zstd"
_SUFFIX = {TAR: "tar", TAR_ZSTD: "tar.zst"}
_CHUNK = 1 << 20
MIB = 1 << 20
# Bounds on what an archive may unpack. Real kernels: cubins of 0.1-2 MiB, sources under 1 MiB.
_MAX_FILE = {"kernel.cubin": 64 * MIB, "kernel.so": 64 * MIB, "kernel.cu": 8 * MIB}
_MAX_OTHER = 64 * 1024  # meta.json, .committed
MAX_TOTAL = 1024 * MIB
MAX_RATIO, RATIO_FREE = 100, 16 * MIB


class Rejected(Exception):
    """The archive is unsafe or does not match its manifest; the message says how."""


def suffix(fmt: str) -> str:
    return _SUFFIX[fmt]


def best_format() -> str:
    return TAR_ZSTD if importlib.util.find_spec("zstandard") else TAR


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pack(cache: CacheRoot, names: list[str], dest: Path, fmt: str) -> dict[str, dict]:
    """Write entries `names` (from whichever root holds each) to `dest`; return {member: {sha256, size}}."""
    files: dict[str, dict] = {}
    with open(dest, "wb") as raw, _compressor(raw, fmt) as out, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            if entries.describe(cache, name) is None:
                raise FileNotFoundError(f"entry {name} is not complete in {cache}")
            for path in sorted(entries.locate(cache, name).iterdir()):
                if not path.is_file() or path.is_symlink():
                    continue
                member = f"{name}/{path.name}"
                data = path.read_bytes()
                info = tarfile.TarInfo(member)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
                files[member] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return files


def unpack(archive: Path, fmt: str, files: dict[str, dict], cache: CacheRoot,
           work_dir: Path) -> tuple[list[str], list[str]]:
    """Check and publish an archive's entries: (published, already complete here).

    Raises Rejected before publishing anything if one member is unsafe or does not match.
    """
    _check_bounds(archive, files, cache.layout)
    staging = work_dir / "entries"
    staging.mkdir(parents=True)
    seen: set[str] = set()
    with open(archive, "rb") as raw, _decompressor(raw, fmt) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    _extract(tar, member, files, staging, seen, cache.layout)
        except Rejected:
            raise
        except Exception as exc:  # tar, zstd and I/O errors alike: a bad archive, not a crash
            raise Rejected(f"unreadable archive ({exc.__class__.__name__}: {exc})") from None
    if missing := sorted(set(files) - seen):
        raise Rejected(f"archive lacks {len(missing)} file(s) of its manifest, e.g. {missing[0]}")
    staged = sorted(staging.iterdir())
    for entry in staged:
        if cache.layout.describe(entry) is None:
            raise Rejected(f"entry {entry.name} in the archive is incomplete ({cache.layout.flaw(entry)})")
    published, kept = [], []
    for entry in staged:
        (published if entries.publish(entry, cache) else kept).append(entry.name)
    return published, kept


def _check_bounds(archive: Path, files: dict, layout) -> None:
    """What the manifest says the archive unpacks to stays within a cache entry's files and sizes."""
    total = 0
    for member, described in files.items():
        parts = PurePosixPath(member).parts
        if member.startswith("/") or "\\" in member or ".." in parts or not parts:
            raise Rejected(f"unsafe path {member!r} in the manifest")
        name = parts[-1]
        if name not in layout.FILES:
            raise Rejected(f"{member!r} in the manifest is no file a {layout.id} entry holds "
                           f"({', '.join(layout.FILES)})")
        size = described.get("size") if isinstance(described, dict) else None
        limit = _MAX_FILE.get(name, _MAX_OTHER)
        if not isinstance(size, int) or size < 0 or size > limit:
            raise Rejected(f"{member!r} would unpack {size!r} bytes, more than a {name} may hold ({limit} bytes)")
        total += size
    packed = archive.stat().st_size
    if total > MAX_TOTAL or total > RATIO_FREE + MAX_RATIO * packed:
        raise Rejected(f"the archive would unpack {total} bytes from {packed} (at most {MAX_TOTAL} in all, and "
                       f"{MAX_RATIO} times the archive beyond the first {RATIO_FREE})")


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, files: dict, staging: Path, seen: set, layout) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or "\\" in name or ".." in parts or not parts:
        raise Rejected(f"unsafe path {name!r} in archive")
    if not layout.is_entry(parts[0]) or len(parts) > 2:
        raise Rejected(f"unexpected path {name!r} in archive (only <entry>/<file> of the {layout.id} layout)")
    if member.isdir():
        return
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "special file"
        raise Rejected(f"{kind} {name!r} in archive")
    if parts[-1] not in layout.FILES:
        raise Rejected(f"{name!r} is no file a {layout.id} entry holds")
    expected = files.get(name)
    if expected is None or name in seen:
        raise Rejected(f"{name!r} is not in the manifest" if expected is None else f"{name!r} appears twice")
    if member.size != expected["size"]:
        raise Rejected(f"{name!r} is {member.size} bytes, the manifest says {expected['size']}")
    dest = staging.joinpath(*parts)
    dest.parent.mkdir(exist_ok=True)
    digest = hashlib.sha256()
    source = tar.extractfile(member)
    with open(dest, "xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected["sha256"]:
        raise Rejected(f"{name!r} does not match its sha256 in the manifest")
    seen.add(name)


class _Plain:
    """Context manager returning the stream itself, for uncompressed tar."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        return False


def _compressor(raw, fmt: str):
    if fmt == TAR:
        return _Plain(raw)
    import zstandard
    return zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False)


def _decompressor(raw, fmt: str):
    if fmt == TAR:
        return _Plain(raw)
    if fmt != TAR_ZSTD:
        raise Rejected(f"unknown archive format {fmt!r}")
    try:
        import zstandard
    except ImportError:
        raise Rejected("the archive is zstd-compressed and the zstandard package is not installed") from None
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)

