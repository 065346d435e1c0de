"""A content-addressed remote cache of warmed shapes, over any fsspec URL.

Layout under the remote URL, per shape and toolchain:

    jitwarm/v1/<shape key>/<parts digest>/manifest.json
    jitwarm/v1/<shape key>/<parts digest>/<archive sha256>.tar.zst

The parts digest covers every fingerprint part that enters DeepGEMM's own cache key
(key_parts), so kernels only travel between matching toolchains. Archives are named by their
own hash and written before the manifest that points to them: a reader never sees half
an artifact, and concurrent pushers of one key each leave a manifest that points to a
whole archive.

Every remote call runs in a daemon thread under a deadline: a remote that is down or
slow costs at most `timeout_s` per phase, then the warm goes on locally and the remote
is left alone for the rest of the run. fsspec is imported only when a remote is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks.host.fingerprint import key_parts
from tasks.host.settings import RemoteConfig
from tasks.plan.text import one_line
from tasks.remote import artifact
from tasks.state.cacheroot import CacheRoot
from tasks.state.schema import RemoteStep

LAYOUT = "jitwarm/v1"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
_MAX_MANIFEST_BYTES = 16 << 20
_PARALLEL = 8
# Object stores publish a whole object on put; elsewhere write a temporary name, then rename.
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def artifact_dir(shape_key: str, parts: dict) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{LAYOUT}/{shape_key}/{digest}"


@dataclass
class Transfer:
    """What happened to one shape at the remote. status, pulling: hit, miss, rejected,
    error; pushing: pushed, exists, error."""

    status: str
    detail: str = ""
    entries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    fetched: dict = field(default_factory=dict, repr=False)  # a pull's downloaded files, before unpacking
    published: list[str] = field(default_factory=list)  # entries a pull added to the local cache
    names: list[str] = field(default_factory=list, repr=False)  # every entry of a pulled artifact
    proof: dict | None = field(default=None, repr=False)  # a pulled manifest's replay proof (sync.proof_of)

    def as_record(self) -> RemoteStep:
        return RemoteStep(status=self.status, detail=self.detail, entries=self.entries, bytes=self.bytes,
                          seconds=self.seconds, published=list(self.published))


class Remote:
    def __init__(self, config: RemoteConfig):
        self.config = config
        self.down: str | None = None  # why the remote is not used any more in this run
        self._fs = None
        self._base = ""
        self._lock = threading.Lock()

    # -- pulling ---------------------------------------------------------------------------

    def pull_many(self, works, cache: CacheRoot, fp: dict, work_dir: Path) -> dict[str, Transfer]:
        """Fetch and verify each shape's artifact in parallel, then publish the good ones."""
        parts = key_parts(fp)
        jobs = {w.key: (lambda w=w: self._fetch(w, parts, work_dir / w.key)) for w in works}
        outcomes = self._bounded(jobs, "pull")
        for key, outcome in outcomes.items():
            if outcome.status == "hit":
                self._publish(outcome, cache, work_dir / key)
        return outcomes

    def _fetch(self, work, parts: dict, into: Path) -> Transfer:
        started = time.monotonic()
        fs, where = self._filesystem(), f"{self._base}/{artifact_dir(work.key, parts)}"
        try:
            raw = fs.cat_file(f"{where}/{MANIFEST}", start=0, end=_MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            return Transfer("miss", "no artifact for this shape and toolchain")
        manifest, problem = _check_manifest(raw, work.key, parts)
        if problem:
            return Transfer("rejected", problem)
        archive = manifest["archive"]
        into.mkdir(parents=True)
        local = into / "archive"
        try:
            size = _download(fs, f"{where}/{archive['name']}", local, limit=archive["size"] + 1)
        except FileNotFoundError:
            return Transfer("rejected", f"manifest names {archive['name']}, which is missing")
        if size != archive["size"] or artifact.sha256_file(local) != archive["sha256"]:
            return Transfer("rejected", f"archive {archive['name']} does not match its sha256 "
                                       f"({size} bytes, manifest says {archive['size']})")
        return Transfer("hit", bytes=size, seconds=round(time.monotonic() - started, 3), proof=manifest.get("proof"),
                       fetched={"archive": local, "format": archive["format"], "files": manifest["files"]})

    @staticmethod
    def _publish(outcome: Transfer, cache: CacheRoot, work_dir: Path) -> None:
        got = outcome.fetched
        try:
            published, kept = artifact.unpack(got["archive"], got["format"], got["files"], cache, work_dir)
        except artifact.Rejected as exc:
            outcome.status, outcome.detail = "rejected", str(exc)
            return
        except Exception as exc:  # e.g. a full disk: the shape compiles locally
            outcome.status, outcome.detail = "error", f"unpacking: {one_line(exc)}"
            return
        outcome.entries, outcome.published = len(published) + len(kept), published
        outcome.names = sorted(published + kept)
        outcome.detail = f"{len(published)} entries unpacked" + (f", {len(kept)} already here" if kept else "")

    # -- pushing ---------------------------------------------------------------------------

    def push_many(self, items, cache: CacheRoot, fp: dict, work_dir: Path) -> dict[str, Transfer]:
        """Upload each (work, entry names, replay proof or None) whose artifact the remote lacks."""
        if not self.config.writable:
            raise RuntimeError(f"remote is in {self.config.mode} mode: never writing")
        parts = key_parts(fp)
        jobs = {w.key: (lambda w=w, names=names, proof=proof: self._push(w, names, proof, parts, cache,
                                                                        work_dir / f"push-{w.key}"))
                for w, names, proof in items}
        return self._bounded(jobs, "push")

    def _push(self, work, names: list[str], proof: dict | None, parts: dict, cache: CacheRoot, into: Path) -> Transfer:
        started = time.monotonic()
        fs, where = self._filesystem(), f"{self._base}/{artifact_dir(work.key, parts)}"
        with contextlib.suppress(FileNotFoundError):
            fs.cat_file(f"{where}/{MANIFEST}", start=0, end=1)
            return Transfer("exists", "the remote already has this artifact")
        into.mkdir(parents=True)
        fmt = artifact.best_format()
        local = into / "archive"
        files = artifact.pack(cache, names, local, fmt)
        sha, size = artifact.sha256_file(local), local.stat().st_size
        name = f"{sha}.{artifact.suffix(fmt)}"
        manifest = {"schema": MANIFEST_SCHEMA, "shape_key": work.key, "shape": work.describe(), "parts": parts,
                    "archive": {"name": name, "sha256": sha, "size": size, "format": fmt},
                    "files": files, "entries": sorted(names),
                    "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if proof is not None:
            manifest["proof"] = proof
        (into / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        self._put(fs, local, f"{where}/{name}")
        self._put(fs, into / MANIFEST, f"{where}/{MANIFEST}")  # last: it makes the artifact visible
        return Transfer("pushed", f"{len(names)} entries", entries=len(names), bytes=size,
                       seconds=round(time.monotonic() - started, 3))

    @staticmethod
    def _put(fs, local: Path, dest: str) -> None:
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if protocols & _ATOMIC_PUT:
            fs.put_file(str(local), dest)
            return
        fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{dest}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        fs.put_file(str(local), tmp)
        fs.mv(tmp, dest)

    # -- plumbing --------------------------------------------------------------------------

    def _filesystem(self):
        with self._lock:
            if self._fs is None:
                import fsspec

                self._fs, self._base = fsspec.core.url_to_fs(self.config.url)
                self._base = self._base.rstrip("/")
            return self._fs

    def _bounded(self, jobs: dict, phase: str) -> dict[str, Transfer]:
        """Run jobs in daemon threads, at most _PARALLEL at a time, for at most timeout_s in all.

        A job still running at the deadline is abandoned (its thread can only write into
        its own temporary directory) and the remote is not used again in this run.
        """
        if self.down:
            return {key: Transfer("error", f"not tried: {self.down}") for key in jobs}
        results: dict[str, Transfer] = {}
        slots = threading.Semaphore(_PARALLEL)

        def run(key, job):
            with slots:
                if self.down:
                    results[key] = Transfer("error", f"not tried: {self.down}")
                    return
                try:
                    results[key] = job()
                except Exception as exc:  # any store error is a warning, never a failed warm
                    results[key] = Transfer("error", one_line(exc))

        threads = [threading.Thread(target=run, args=item, daemon=True, name=f"jitwarm-{phase}")
                   for item in jobs.items()]
        deadline = time.monotonic() + self.config.timeout_s
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [key for key in jobs if key not in results]
        if late:
            self.down = f"the remote did not answer within {self.config.timeout_s:g}s ({phase})"
        return {key: results.get(key) or Transfer("error", self.down) for key in jobs}


def _check_manifest(raw: bytes, shape_key: str, parts: dict) -> tuple[dict, str | None]:
    try:
        manifest = json.loads(raw)
        archive, files = manifest["archive"], manifest["files"]
        ok = (manifest.get("schema") == MANIFEST_SCHEMA and isinstance(files, dict)
              and all(isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int) for v in files.values())
              and _HEX64.fullmatch(str(archive.get("sha256"))) and isinstance(archive.get("size"), int)
              and archive.get("format") in (artifact.TAR, artifact.TAR_ZSTD)
              and archive.get("name") == f"{archive['sha256']}.{artifact.suffix(archive['format'])}")
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        return {}, "manifest is not a jitwarm v1 manifest"
    if manifest.get("shape_key") != shape_key or manifest.get("parts") != parts:
        return {}, "manifest is for another shape or toolchain"
    return manifest, None


def _download(fs, path: str, dest: Path, limit: int) -> int:
    """Copy at most `limit` bytes: an archive larger than its manifest says is cut, then rejected."""
    copied = 0
    with fs.open(path, "rb") as src, open(dest, "wb") as out:
        while copied < limit and (chunk := src.read(min(1 << 22, limit - copied))):
            out.write(chunk)
            copied += len(chunk)
    return copied
