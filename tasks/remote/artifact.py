"""Pack a shape's cache entries into one archive, and unpack one without trusting it.

An archive is a tar of `<entry>/<file>` members (entries named as the cache's layout
names them), zstd-compressed when the `zstandard` package is present. Its manifest lists
every file's sha256 and size. Packing is deterministic (sorted names, zero times and
owners), so two runners that built the same kernels push the same bytes.

Unpacking refuses anything but plain files and directories under entry names of the
layout (no absolute paths, `..`, links or devices), checks every file against the
manifest, and publishes each entry into the writable root by atomic rename
(tasks/entries.py), never replacing a complete one.
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

