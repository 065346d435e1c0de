"""Packing and unpacking a shape's cache entries (tasks/remote/artifact.py), on real files."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from conftest import cache, make_entry
from tasks.remote import artifact

# Two entries per layout: 0.1.x names carry a kernel. prefix, 0.2.x (DeepJIT) ones do not.
NAMES = {"0.1.x": ("kernel.gemm.aaaa", "kernel.transpose.bbbb"),
         "0.2.x": ("sm90_fp8_gemm_1d2d." + "a" * 32, "transpose_fp32." + "b" * 32)}
FILES = {"0.1.x": ["kernel.cu", "kernel.cubin"], "0.2.x": [".committed", "kernel.cu", "kernel.cubin", "meta.json"]}


@pytest.mark.parametrize("layout", ["0.1.x", "0.2.x"])
@pytest.mark.parametrize("fmt", [artifact.TAR, artifact.TAR_ZSTD])
def test_round_trip_is_deterministic_and_keeps_complete_local_entries(tmp_path, fmt, layout):
    gemm, transpose = NAMES[layout]
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in (gemm, transpose):
        make_entry(src, name, layout, b"CUBIN\x00\x01")
    one, two = tmp_path / "one", tmp_path / "two"
    files = artifact.pack(cache(src, layout), [transpose, gemm], one, fmt)
    assert artifact.pack(cache(src, layout), [gemm, transpose], two, fmt) == files
    assert one.read_bytes() == two.read_bytes(), "packing is not deterministic"
    assert sorted(files) == [f"{name}/{f}" for name in sorted((gemm, transpose)) for f in FILES[layout]]
    make_entry(dst, transpose, layout, b"CUBIN local")  # complete here already: never replaced
    published, kept = artifact.unpack(one, fmt, files, cache(dst, layout), tmp_path / "work")
    assert (published, kept) == ([gemm], [transpose])
    assert (dst / "cache" / transpose / "kernel.cubin").read_bytes() == b"CUBIN local"
    assert (dst / "cache" / gemm / "kernel.cubin").read_bytes() == b"CUBIN\x00\x01"


def test_deepjit_entries_pack_from_read_only_roots_and_unpack_only_what_no_root_has(tmp_path):
    gemm, transpose = NAMES["0.2.x"]
    old, new, dst = tmp_path / "old", tmp_path / "new", tmp_path / "dst"
    make_entry(old, gemm, "0.2.x")
    make_entry(new, transpose, "0.2.x")
    archive = tmp_path / "a.tar"
    files = artifact.pack(cache(new, "0.2.x", old), [gemm, transpose], archive, artifact.TAR)
    assert f"{gemm}/.committed" in files
    make_entry(tmp_path / "ro", gemm, "0.2.x")  # the reader has it in a read-only root
    published, kept = artifact.unpack(archive, artifact.TAR, files, cache(dst, "0.2.x", tmp_path / "ro"),
                                      tmp_path / "work")
    assert (published, kept) == ([transpose], [gemm])
    assert not (dst / "cache" / gemm).exists(), "an entry a read-only root holds was copied into the writable one"


def test_an_uncommitted_deepjit_entry_or_a_foreign_layout_is_rejected(tmp_path):
    gemm, _ = NAMES["0.2.x"]
    src = tmp_path / "src"
    make_entry(src, gemm, "0.2.x")
    archive = tmp_path / "a.tar"
    files = artifact.pack(cache(src, "0.2.x"), [gemm], archive, artifact.TAR)
    entry = {k: v for k, v in files.items() if not k.endswith(".committed")}
    evil_archive(archive, lambda tar: [regular(tar, k, (src / "cache" / k).read_bytes()) for k in sorted(entry)])
    with pytest.raises(artifact.Rejected, match=r"incomplete \(no .committed\)"):
        artifact.unpack(archive, artifact.TAR, entry, cache(tmp_path / "root", "0.2.x"), tmp_path / "work")
    legacy = tmp_path / "legacy.tar"
    make_entry(src, "kernel.gemm.aaaa")
    legacy_files = artifact.pack(cache(src), ["kernel.gemm.aaaa"], legacy, artifact.TAR)
    with pytest.raises(artifact.Rejected, match="unexpected path .* of the 0.2.x layout"):
        artifact.unpack(legacy, artifact.TAR, legacy_files, cache(tmp_path / "root", "0.2.x"), tmp_path / "work2")
    assert not (tmp_path / "root" / "cache").exists()


def evil_archive(path, build) -> dict:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        build(tar)
    path.write_bytes(raw.getvalue())
    return {}


def regular(tar, name: str, data: bytes = b"CUBIN") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def special(tar, name: str, kind: bytes, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    tar.addfile(info)


@pytest.mark.parametrize("build, says", [
    (lambda tar: regular(tar, "/etc/kernel.x/kernel.cu"), "unsafe path"),
    (lambda tar: regular(tar, "kernel.x/../../outside"), "unsafe path"),
    (lambda tar: regular(tar, "notakernel/kernel.cu"), "unexpected path"),
    (lambda tar: regular(tar, "kernel.x/deeper/kernel.cu"), "unexpected path"),
    (lambda tar: special(tar, "kernel.x/kernel.cubin", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (lambda tar: special(tar, "kernel.x/kernel.cubin", tarfile.LNKTYPE, "kernel.x/kernel.cu"), "link"),
    (lambda tar: special(tar, "kernel.x/null", tarfile.CHRTYPE), "special file"),
    (lambda tar: special(tar, "kernel.x/fifo", tarfile.FIFOTYPE), "special file"),
    (lambda tar: regular(tar, "kernel.x/kernel.cu"), "not in the manifest"),
])
def test_unsafe_or_unlisted_members_are_rejected_before_anything_is_published(tmp_path, build, says):
    archive = tmp_path / "evil.tar"
    evil_archive(archive, build)
    with pytest.raises(artifact.Rejected, match=says):
        artifact.unpack(archive, artifact.TAR, {}, cache(tmp_path / "root"), tmp_path / "work")
    assert not (tmp_path / "root" / "cache").exists()
    assert not (tmp_path / "outside").exists()


def test_a_file_that_differs_from_its_manifest_is_rejected(tmp_path):
    archive = tmp_path / "a.tar"
    evil_archive(archive, lambda tar: (regular(tar, "kernel.x/kernel.cu", b"// a"),
                                       regular(tar, "kernel.x/kernel.cubin", b"CUBIN evil")))
    files = {"kernel.x/kernel.cu": {"sha256": hashlib.sha256(b"// a").hexdigest(), "size": 4},
             "kernel.x/kernel.cubin": {"sha256": hashlib.sha256(b"CUBIN good").hexdigest(), "size": 10}}
    with pytest.raises(artifact.Rejected, match="does not match its sha256"):
        artifact.unpack(archive, artifact.TAR, files, cache(tmp_path / "root"), tmp_path / "work")
    files["kernel.y/kernel.cu"] = files.pop("kernel.x/kernel.cubin")
    with pytest.raises(artifact.Rejected, match="not in the manifest"):
        artifact.unpack(archive, artifact.TAR, files, cache(tmp_path / "root"), tmp_path / "work2")
    assert not (tmp_path / "root" / "cache").exists()


def test_a_truncated_archive_is_rejected(tmp_path):
    src = tmp_path / "src"
    make_entry(src, "kernel.gemm.aaaa", binary=b"CUBIN" * 4000)
    archive = tmp_path / "a.tar.zst"
    files = artifact.pack(cache(src), ["kernel.gemm.aaaa"], archive, artifact.TAR_ZSTD)
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(artifact.Rejected):
        artifact.unpack(archive, artifact.TAR_ZSTD, files, cache(tmp_path / "root"), tmp_path / "work")
    assert not (tmp_path / "root" / "cache").exists()


def _zero_archive(path, layout: str, members: dict[str, int]) -> dict:
    """A tar+zstd archive of all-zero members, with the manifest that agrees with it."""
    import zstandard

    files = {}
    with open(path, "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as out, \
            tarfile.open(fileobj=out, mode="w|") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
            files[name] = {"sha256": hashlib.sha256(bytes(size)).hexdigest(), "size": size}
    return files


@pytest.mark.parametrize("layout", ["0.1.x", "0.2.x"])
@pytest.mark.parametrize("members, says", [
    # Regression: a 33 KB archive whose manifest agreed unpacked 1 GiB into cache/<entry>/big.bin.
    ({"big.bin": 1 << 20}, "no file a"),
    ({"kernel.cubin": 65 << 20}, "more than a kernel.cubin may hold"),
    ({"kernel.cu": 9 << 20}, "more than a kernel.cu may hold"),
    ({"kernel.cubin": 40 << 20}, "times the archive beyond the first"),
])
def test_an_archive_cannot_unpack_more_than_a_cache_entry_holds(tmp_path, layout, members, says):
    entry = NAMES[layout][0]
    archive = tmp_path / "bomb.tar.zst"
    files = _zero_archive(archive, layout, {f"{entry}/{name}": size for name, size in members.items()})
    with pytest.raises(artifact.Rejected, match=says):
        artifact.unpack(archive, artifact.TAR_ZSTD, files, cache(tmp_path / "root", layout), tmp_path / "work")
    assert not (tmp_path / "work").exists() and not (tmp_path / "root" / "cache").exists()
