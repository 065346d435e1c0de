"""Packing and unpacking a shape's cache entries (tasks/artifact.py), on real files."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from tasks import artifact


def make_entry(root, name: str, binary: bytes = b"CUBIN\x00\x01") -> None:
    entry = root / "cache" / name
    entry.mkdir(parents=True)
    (entry / "kernel.cu").write_text(f"// {name}\n")
    (entry / "kernel.cubin").write_bytes(binary)


@pytest.mark.parametrize("fmt", [artifact.TAR, artifact.TAR_ZSTD])
def test_round_trip_is_deterministic_and_keeps_complete_local_entries(tmp_path, fmt):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in ("kernel.gemm.aaaa", "kernel.transpose.bbbb"):
        make_entry(src, name)
    one, two = tmp_path / "one", tmp_path / "two"
    files = artifact.pack(src, ["kernel.transpose.bbbb", "kernel.gemm.aaaa"], one, fmt)
    assert artifact.pack(src, ["kernel.gemm.aaaa", "kernel.transpose.bbbb"], two, fmt) == files
    assert one.read_bytes() == two.read_bytes(), "packing is not deterministic"
    assert sorted(files) == ["kernel.gemm.aaaa/kernel.cu", "kernel.gemm.aaaa/kernel.cubin",
                             "kernel.transpose.bbbb/kernel.cu", "kernel.transpose.bbbb/kernel.cubin"]
    make_entry(dst, "kernel.transpose.bbbb", b"CUBIN local")  # complete here already: never replaced
    published, kept = artifact.unpack(one, fmt, files, dst, tmp_path / "work")
    assert (published, kept) == (["kernel.gemm.aaaa"], ["kernel.transpose.bbbb"])
    assert (dst / "cache" / "kernel.transpose.bbbb" / "kernel.cubin").read_bytes() == b"CUBIN local"
    assert (dst / "cache" / "kernel.gemm.aaaa" / "kernel.cubin").read_bytes() == b"CUBIN\x00\x01"


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
        artifact.unpack(archive, artifact.TAR, {}, tmp_path / "root", tmp_path / "work")
    assert not (tmp_path / "root" / "cache").exists()
    assert not (tmp_path / "outside").exists()


def test_a_file_that_differs_from_its_manifest_is_rejected(tmp_path):
    archive = tmp_path / "a.tar"
    evil_archive(archive, lambda tar: (regular(tar, "kernel.x/kernel.cu", b"// a"),
                                       regular(tar, "kernel.x/kernel.cubin", b"CUBIN evil")))
    files = {"kernel.x/kernel.cu": {"sha256": hashlib.sha256(b"// a").hexdigest(), "size": 4},
             "kernel.x/kernel.cubin": {"sha256": hashlib.sha256(b"CUBIN good").hexdigest(), "size": 10}}
    with pytest.raises(artifact.Rejected, match="does not match its sha256"):
        artifact.unpack(archive, artifact.TAR, files, tmp_path / "root", tmp_path / "work")
    files["kernel.y/kernel.cu"] = files.pop("kernel.x/kernel.cubin")
    with pytest.raises(artifact.Rejected, match="not in the manifest"):
        artifact.unpack(archive, artifact.TAR, files, tmp_path / "root", tmp_path / "work2")
    assert not (tmp_path / "root" / "cache").exists()


def test_a_truncated_archive_is_rejected(tmp_path):
    src = tmp_path / "src"
    make_entry(src, "kernel.gemm.aaaa", b"CUBIN" * 4000)
    archive = tmp_path / "a.tar.zst"
    files = artifact.pack(src, ["kernel.gemm.aaaa"], archive, artifact.TAR_ZSTD)
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(artifact.Rejected):
        artifact.unpack(archive, artifact.TAR_ZSTD, files, tmp_path / "root", tmp_path / "work")
    assert not (tmp_path / "root" / "cache").exists()
