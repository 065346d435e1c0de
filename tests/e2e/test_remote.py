"""The remote cache end to end: a file:// remote and a real S3 endpoint (moto's server on
loopback), through the stand-in deep_gemm, whose compile log counts every compile."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import tarfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, Workspace, model_file, newer_nvcc, plain_doit

pytestmark = pytest.mark.both_layouts

SMALL = "m_list = [1, 32, 128, 1024]\n"
TP8 = "[[launch]]\ntp = 8\n" + SMALL
SECRET = "jitwarm-test-secret-" + os.urandom(6).hex()
KEY_ID = "AKIAJITWARMTEST" + os.urandom(3).hex().upper()


def second_root(ws: Workspace, name: str) -> Workspace:
    """The same registry and compile log, an empty cache root: another runner."""
    ws.root = ws.tmp / name
    ws.env["DG_JIT_CACHE_DIR"] = str(ws.root)
    ws.env["JITWARM_DOIT_DB"] = str(ws.tmp / f"{name}.db")
    return ws


def manifests(remote: Path) -> list[Path]:
    return sorted(remote.glob("jitwarm/v1/*/*/manifest.json"))


def tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def report(ws: Workspace, out, name: str = "report.json") -> dict:
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads((ws.tmp / name).read_text())


def warm(ws: Workspace, remote: str, mode: str = "read", **env):
    env.setdefault("JITWARM_REMOTE_TIMEOUT_S", "30")
    return ws.doit("warm", JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE=mode,
                   JITWARM_REPORT_JSON=str(ws.tmp / "report.json"), **env)


def push_v3(ws: Workspace) -> None:
    model_file(ws.models, "v3", TP8)
    remote = ws.tmp / "remote"
    data = report(ws, warm(ws, f"file://{remote}", "read-write"))
    assert data["totals"]["remote"]["pushed"] == 6 and len(manifests(remote)) == 6


@pytest.fixture
def pushed(ws, template):
    """A file:// remote filled by one runner's read-write warm of a 6-shape target (made once
    per session; each test gets its own copy)."""
    ws.copy_of(template(ws.layout, "v3-pushed", push_v3))
    return ws, ws.tmp / "remote", len(ws.compiles())


def test_pull_into_an_empty_root_compiles_nothing(pushed):
    ws, remote, compiled = pushed
    assert compiled > 0
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}")
    data = report(ws, out)
    assert len(ws.compiles()) == compiled, "a pulled shape was compiled again"
    assert set(ws.status().values()) == {"U"}
    remote_totals = data["totals"]["remote"]
    assert (remote_totals["hits"], remote_totals["misses"], remote_totals["pushed"]) == (6, 0, 0)
    assert data["totals"]["kernels_compiled"] == 0
    assert {s["remote"] for t in data["targets"] for s in t["shapes"]} == {"hit"}
    info = ws.doit("info", f"warm:{next(iter(ws.status())).removeprefix('warm:')}", JITWARM_REMOTE=f"file://{remote}")
    assert "6 hit" in info.stdout and "entries unpacked" in info.stdout


def test_a_proven_pull_needs_no_torch_no_gpu_pass_and_no_pool(pushed):
    """By default a pulled shape whose manifest carries the pusher's replay proof is warm once
    every file matches its sha256: nothing is imported or started for it."""
    ws, remote, compiled = pushed
    proofs = [json.loads(m.read_text())["proof"] for m in manifests(remote)]
    assert all(p["new_entries"] == 0 and p["calls"] == p["m_count"] == 4 and p["entries"] for p in proofs)
    ws = second_root(ws, "runner-b")
    poison = ws.tmp / "poison"
    (poison / "torch").mkdir(parents=True)
    fired = ws.tmp / "torch-imported"
    (poison / "torch" / "__init__.py").write_text(f"open({str(fired)!r}, 'w').close()\nraise ImportError('poisoned')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(poison), ws.env.get("PYTHONPATH", "")])}
    out = warm(ws, f"file://{remote}", **env)
    data = report(ws, out)
    assert not fired.exists(), "something imported torch"
    assert "compiled " not in out.stdout and not list((ws.root / "jitwarm" / "logs").glob("*.log")), out.stdout
    assert out.stdout.count("proven by the pusher's replay") == 6
    assert len(ws.compiles()) == compiled and data["totals"]["kernels_compiled"] == 0
    assert set(ws.status().values()) == {"U"}
    for record in shape_records(ws.root).values():
        assert record["ok"] and record["new"] == [] and record["replay"]["new_entries"] == 0
        assert record["verification"].startswith("remote manifest: every file matched its sha256 here; "
                                                 "the pusher's replay of all 4 calls compiled 0")
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    assert all("not replayed here" in shape["verification"] for shape in marker["shapes"])


def test_a_manifest_without_a_matching_proof_is_replayed(pushed):
    ws, remote, compiled = pushed
    old, wrong = manifests(remote)[:2]
    for path, change in ((old, lambda m: m.pop("proof")), (wrong, lambda m: m["proof"]["entries"].pop())):
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    ws = second_root(ws, "runner-b")
    report(ws, warm(ws, f"file://{remote}"))
    replayed = {key for key, r in shape_records(ws.root).items() if r["verification"].startswith("remote manifest, plus")}
    assert replayed == {json.loads(old.read_text())["shape_key"], json.loads(wrong.read_text())["shape_key"]}
    assert len(ws.compiles()) == compiled and set(ws.status().values()) == {"U"}


def test_a_host_without_a_gpu_pulls_proven_kernels_for_a_declared_one(ws):
    """A CPU image build stage bakes a proven cache for an H200 (the stand-in compiles without
    a GPU, so here the pusher can declare the H200 too, which keys its artifacts for one)."""
    model_file(ws.models, "v3", TP8)
    remote = ws.tmp / "remote"
    report(ws, warm(ws, f"file://{remote}", "read-write", JITWARM_GPU="H200"))
    compiled = len(ws.compiles())
    ws = second_root(ws, "image-build")
    data = report(ws, warm(ws, f"file://{remote}", JITWARM_GPU="H200"))
    assert len(ws.compiles()) == compiled and data["totals"]["remote"]["hits"] == 6
    [marker] = [json.loads(p.read_text()) for p in (ws.root / "jitwarm" / "markers").glob("*.json")]
    gpu = {k: v for k, v in marker["fingerprint"].items() if k.startswith("gpu.")}
    assert gpu == {"gpu.name": "NVIDIA H200", "gpu.arch": "9.0", "gpu.sms": "132", "gpu.declared": "H200"}
    assert all("the pusher's replay" in shape["verification"] for shape in marker["shapes"])
    # Without the declaration this GPU-less host keys for no GPU: nothing matches the remote.
    ws = second_root(ws, "undeclared")
    assert report(ws, warm(ws, f"file://{remote}"))["totals"]["remote"]["misses"] == 6
    bad = warm(ws, f"file://{remote}", JITWARM_GPU="A100")
    assert bad.returncode != 0 and "jitwarm: JITWARM_GPU: expected H100, H200 or smXY:SMS" in bad.stdout + bad.stderr


@pytest.mark.one_layout
def test_what_a_declared_gpu_cannot_warm_says_why_in_one_line():
    from tasks.runner import batch
    from tasks.remote.store import Transfer

    lead = "no GPU here (JITWARM_GPU=H200 only declares one) to compile or replay this shape; "
    assert batch.no_gpu_line("H200", None, None) == lead + "no remote cache to pull a proven artifact from"
    miss = Transfer("miss", "no artifact for this shape and toolchain")
    assert batch.no_gpu_line("H200", miss, "manifest") == (
        lead + "the remote's artifact: miss (no artifact for this shape and toolchain)")
    unproven = lead + "the remote's artifact carries no replay proof that matches it"
    assert batch.no_gpu_line("H200", Transfer("hit"), "manifest") == unproven
    assert batch.no_gpu_line("H200", Transfer("hit", proof={"calls": 3}), "manifest") == unproven
    assert batch.no_gpu_line("H200", Transfer("hit", proof={"calls": 4}), "replay") == (
        lead + "verify = replay asks for a replay")


@pytest.mark.one_layout
def test_verify_setting_is_checked(pushed):
    ws, remote, _ = pushed
    out = warm(ws, f"file://{remote}", JITWARM_VERIFY="trust-me")
    assert out.returncode != 0
    assert "jitwarm: JITWARM_VERIFY: expected one of manifest, replay, got 'trust-me'" in out.stdout + out.stderr


@pytest.mark.parametrize("damage, says", [
    ("flip", "does not match its sha256"), ("truncate", "does not match its sha256"), ("grow", "does not match"),
    ("delete", "which is missing")])
def test_damaged_artifact_is_rejected_and_its_shape_compiled_locally(pushed, damage, says):
    ws, remote, compiled = pushed
    victim = manifests(remote)[0]
    archive = next(p for p in victim.parent.iterdir() if p.name != "manifest.json")
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    archive.write_bytes({"flip": bytes(data), "truncate": bytes(data[:len(data) // 2]),
                         "grow": bytes(data) + b"\0" * 4096, "delete": b""}[damage])
    if damage == "delete":
        archive.unlink()
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}")
    result = report(ws, out)
    assert "rejected: " in out.stdout and says in out.stdout
    assert result["totals"]["remote"] | {"url": ""} == {
        "url": "", "hits": 5, "misses": 0, "rejected": 1, "errors": 0, "incomplete": 0, "pushed": 0, "push_errors": 0}
    assert 0 < len(ws.compiles()) - compiled < compiled, "only the rejected shape compiles"
    assert set(ws.status().values()) == {"U"}


def test_consistent_but_broken_artifact_fails_replay_and_compiles_locally(pushed):
    """A re-signed artifact with a garbage kernel passes the sha256 but not the replay (which
    verify = replay runs for every pulled shape; by default the pusher's proof is trusted)."""
    ws, remote, compiled = pushed
    manifest_path = manifests(remote)[0]
    manifest = json.loads(manifest_path.read_text())
    members = {name: b"not a kernel image" if name.endswith(".cubin") else b"// source\n"
               for name in manifest["files"]}
    write_artifact(manifest_path, manifest, members)
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}", JITWARM_VERIFY="replay")
    result = report(ws, out)
    assert "replay of the pulled entries failed" in out.stdout
    assert result["totals"]["remote"]["rejected"] == 1 and result["totals"]["remote"]["hits"] == 5
    assert len(ws.compiles()) > compiled
    assert set(ws.status().values()) == {"U"}
    for entry in (ws.root / "cache").iterdir():  # nothing of the broken artifact is left
        assert b"not a kernel" not in (entry / "kernel.cubin").read_bytes()


def shape_records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "jitwarm" / "shapes").glob("*.json")}


def test_pulled_shapes_share_replay_processes_and_keep_the_pushers_entries(pushed):
    ws, remote, compiled = pushed
    pusher_root = ws.root
    pushers = shape_records(pusher_root)
    ws = second_root(ws, "runner-b")
    report(ws, warm(ws, f"file://{remote}", JITWARM_JOBS="2", JITWARM_VERIFY="replay"))
    pulled = shape_records(ws.root)
    # One process replays six tiny shapes, so most find the shared transpose kernel already
    # loaded: their entries still come out as the pusher attributed them.
    def sizes(found, root):
        assert {d["root"] for r in found.values() for d in r["entries"].values()} == {str(root)}
        return {k: {name: (d["binary"], d["size"]) for name, d in r["entries"].items()} for k, r in found.items()}

    assert sizes(pulled, ws.root) == sizes(pushers, pusher_root)
    assert all(r["ok"] and r["new"] == [] and r["calls"] == 4 for r in pulled.values())
    assert all(r["verification"].startswith("remote manifest") for r in pulled.values())
    logs = {Path(r["log"]).name for r in pulled.values()}
    assert logs == {"replay-pulled-0.log"}, logs
    assert len(ws.compiles()) == compiled


def test_artifact_lacking_a_kernel_is_completed_by_its_replay(pushed):
    ws, remote, compiled = pushed
    manifest_path = manifests(remote)[0]
    manifest = json.loads(manifest_path.read_text())
    dropped = next(name for name in manifest["entries"] if "transpose" not in name)
    members = {name: (ws.root / "cache" / name).read_bytes() for name in manifest["files"]
               if not name.startswith(f"{dropped}/")}
    manifest["entries"].remove(dropped)
    write_artifact(manifest_path, manifest, members)
    ws = second_root(ws, "runner-b")
    data = report(ws, warm(ws, f"file://{remote}"))
    assert ws.compiles()[compiled:] == [dropped]
    assert (data["totals"]["remote"]["incomplete"], data["totals"]["remote"]["hits"]) == (1, 5)
    record = shape_records(ws.root)[manifest["shape_key"]]
    assert record["ok"] and record["new"] == [dropped] and dropped in record["entries"]
    assert (ws.root / "cache" / dropped / "kernel.cubin").is_file()
    assert set(ws.status().values()) == {"U"}


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_pulled_shape_that_crashes_or_hangs_in_replay_spares_the_others(pushed, fault):
    ws, remote, _ = pushed
    victim = "2112x7168"  # the first piece: the other shapes' pieces are still to come
    ws = second_root(ws, "runner-b")
    token = f"jitwarm-test-{time.time_ns()}"
    env = {"FAKE_DG_CRASH_ON": victim, "FAKE_DG_REPLAY_S": "0.3"} if fault == "crash" else {
        "FAKE_DG_HANG_ON": victim, "FAKE_DG_TOKEN": token, "JITWARM_SHAPE_TIMEOUT_S": "3"}
    out = warm(ws, f"file://{remote}", JITWARM_VERIFY="replay", JITWARM_JOBS="2", **env)
    assert out.returncode == 1, out.stdout + out.stderr  # the victim fails here too when compiled locally
    data = json.loads((ws.tmp / "report.json").read_text())
    assert (data["totals"]["remote"]["hits"], data["totals"]["remote"]["rejected"]) == (5, 1)
    said = "killed by SIGABRT" if fault == "crash" else "timed out after 3s"
    assert f"replay of the pulled entries failed: replay {said}" in out.stdout
    records = shape_records(ws.root)
    assert [f"{r['shape']['n']}x{r['shape']['k']}" for r in records.values() if not r["ok"]] == [victim]
    assert sum(r["ok"] for r in records.values()) == 5
    if fault == "crash":  # a new process took over the pieces the crashed one left
        logs = ws.root / "jitwarm" / "logs"
        assert "CUDA error" in (logs / "replay-pulled-0.log").read_text()
        assert (logs / "replay-pulled-1.log").read_text().count("piece ") == 5
    assert not [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


def test_replay_processes_that_cannot_start_are_not_restarted_for_every_piece(pushed):
    ws, remote, _ = pushed
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}", JITWARM_VERIFY="replay", JITWARM_JOBS="2", FAKE_DG_NO_DEVICE="1")
    assert out.returncode == 1
    records = shape_records(ws.root)
    assert len(records) == 6 and not any(r["ok"] for r in records.values())
    assert all(r["remote"]["pull"]["status"] == "rejected" for r in records.values())
    assert "replay of the pulled entries failed: no CUDA device visible to torch" in out.stdout
    # The one process planned (six tiny shapes) failed before its first piece: no new
    # process is started for each of the six pieces.
    assert len(list((ws.root / "jitwarm" / "logs").glob("replay-pulled-*.log"))) == 1


@pytest.mark.parametrize("evil", ["traversal", "symlink"])
def test_unsafe_archive_on_the_remote_is_rejected(pushed, evil):
    ws, remote, compiled = pushed
    manifest_path = manifests(remote)[0]
    manifest = json.loads(manifest_path.read_text())
    members = {name: b"CUBIN ok" for name in manifest["files"]}
    escape = ws.tmp / "escaped"
    if evil == "traversal":
        members["../../../../escaped"] = b"owned"
    else:
        members[f"{next(iter(manifest['files'])).split('/')[0]}/link"] = escape
    write_artifact(manifest_path, manifest, members)
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}")
    result = report(ws, out)
    assert ("unsafe path" if evil == "traversal" else "link") in out.stdout
    assert result["totals"]["remote"]["rejected"] == 1
    assert not escape.exists() and not list(ws.root.rglob("link"))
    assert set(ws.status().values()) == {"U"}


def test_read_mode_never_writes(pushed):
    ws, remote, _ = pushed
    for manifest in manifests(remote)[:2]:  # two misses: a read-write run would push them
        for path in manifest.parent.iterdir():
            path.unlink()
    before = tree(remote)
    ws = second_root(ws, "runner-b")
    out = warm(ws, f"file://{remote}", "read")
    result = report(ws, out)
    assert result["totals"]["remote"]["misses"] == 2 and result["totals"]["remote"]["pushed"] == 0
    assert tree(remote) == before


@pytest.mark.one_layout
def test_concurrent_pushers_of_one_key_are_harmless(ws):
    import subprocess
    import sys

    from conftest import DODO

    model_file(ws.models, "v3", TP8)
    remote = ws.tmp / "remote"
    runs = []
    for name in ("a", "b"):
        env = {**ws.env, "DG_JIT_CACHE_DIR": str(ws.tmp / name), "JITWARM_DOIT_DB": str(ws.tmp / f"{name}.db"),
               "JITWARM_REMOTE": f"file://{remote}", "JITWARM_REMOTE_MODE": "read-write"}
        runs.append(subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), "warm"], cwd=ws.tmp, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for run in runs:
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, out
    assert len(manifests(remote)) == 6
    assert not [p for p in remote.rglob("*") if ".tmp-" in p.name], "a temporary upload was left behind"
    compiled = len(ws.compiles())
    ws = second_root(ws, "runner-c")
    assert report(ws, warm(ws, f"file://{remote}"))["totals"]["remote"]["hits"] == 6
    assert len(ws.compiles()) == compiled


# --- S3 over loopback -----------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_env(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1"}


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"jitwarm-{os.urandom(4).hex()}"
    boto3.client("s3", **{"endpoint_url": endpoint, "aws_access_key_id": KEY_ID,
                          "aws_secret_access_key": SECRET, "region_name": "us-east-1"}).create_bucket(Bucket=name)
    return name


def bucket_listing(endpoint: str, bucket: str) -> dict[str, str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


@pytest.mark.one_layout
def test_s3_push_then_pull_with_no_secret_in_any_output(ws, s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    url = f"s3://{bucket}/fleet"
    ws.env.update(s3_env(s3_endpoint))
    model_file(ws.models, "v3", TP8)
    summary = ws.tmp / "summary.md"
    first = warm(ws, url, "read-write", GITHUB_STEP_SUMMARY=str(summary), JITWARM_JUNIT_XML=str(ws.tmp / "j.xml"))
    assert report(ws, first)["totals"]["remote"]["pushed"] == 6
    objects = bucket_listing(s3_endpoint, bucket)
    assert sum(k.endswith("/manifest.json") for k in objects) == 6 and len(objects) == 12
    compiled = len(ws.compiles())
    outputs = [first.stdout + first.stderr]

    ws = second_root(ws, "runner-b")
    second = warm(ws, url, "read", GITHUB_STEP_SUMMARY=str(summary))
    assert report(ws, second)["totals"]["remote"]["hits"] == 6
    assert len(ws.compiles()) == compiled and set(ws.status().values()) == {"U"}
    assert bucket_listing(s3_endpoint, bucket) == objects, "read mode wrote to the bucket"
    assert "6 hits, 0 misses" in summary.read_text()
    outputs.append(second.stdout + second.stderr)
    files = [p for p in ws.tmp.rglob("*") if p.is_file() and p.stat().st_size < (8 << 20)]
    assert files
    for text in outputs + [p.read_bytes().decode("utf-8", "replace") for p in files]:
        assert SECRET not in text and KEY_ID not in text


@pytest.mark.one_layout
def test_remote_down_warms_locally(ws, s3_endpoint):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ws.env.update(s3_env(f"http://127.0.0.1:{port}"))
    model_file(ws.models, "v3", TP8)
    started = time.monotonic()
    out = warm(ws, "s3://nowhere/fleet", "read-write", JITWARM_REMOTE_TIMEOUT_S="5")
    result = report(ws, out)
    assert time.monotonic() - started < 60
    assert result["totals"]["remote"]["errors"] == 6 and result["totals"]["remote"]["push_errors"] == 6
    assert set(ws.status().values()) == {"U"}


@pytest.mark.one_layout
def test_remote_that_never_answers_costs_a_bounded_wait(ws):
    """A listener that accepts and never replies: the pull gives up after the timeout,
    and the push is not tried again in the same run."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)], daemon=True).start()
    ws.env.update(s3_env(f"http://127.0.0.1:{listener.getsockname()[1]}"))
    model_file(ws.models, "v3", TP8)
    started = time.monotonic()
    out = warm(ws, "s3://slow/fleet", "read-write", JITWARM_REMOTE_TIMEOUT_S="3")
    elapsed = time.monotonic() - started
    result = report(ws, out)
    assert "did not answer within 3s" in out.stdout
    assert result["totals"]["remote"]["errors"] == 6 and set(ws.status().values()) == {"U"}
    assert elapsed < 45, f"the warm waited {elapsed:.0f}s on a silent remote"
    listener.close()


# --- configuration ----------------------------------------------------------------------

@pytest.mark.one_layout
def test_bad_remote_settings_are_one_line_errors(ws):
    model_file(ws.models, "v3", TP8)
    out = ws.doit("list", JITWARM_REMOTE="s3://b/p", JITWARM_REMOTE_MODE="readwrite")
    assert out.returncode != 0
    assert "JITWARM_REMOTE_MODE: expected one of read, read-write, off, got 'readwrite'" in out.stderr
    out = ws.doit("list", JITWARM_REMOTE=f"s3://{KEY_ID}:{SECRET}@bucket/p")
    assert out.returncode != 0 and "credentials in the URL are not accepted" in out.stderr
    assert SECRET not in out.stdout + out.stderr
    out = ws.doit("list", JITWARM_REMOTE="s3://b/p", JITWARM_REMOTE_MODE="off")
    assert out.returncode == 0


def write_artifact(manifest_path: Path, manifest: dict, members: dict) -> None:
    """Replace a remote artifact with `members` (bytes, or a Path for a symlink), signed
    consistently, so only the archive's own content can give it away."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, Path):
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
                continue
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    for old in manifest_path.parent.iterdir():
        old.unlink()
    (manifest_path.parent / f"{sha}.tar").write_bytes(data)
    manifest["archive"] = {"name": f"{sha}.tar", "sha256": sha, "size": len(data), "format": "tar"}
    manifest["files"] = {name: {"sha256": hashlib.sha256(c).hexdigest(), "size": len(c)}
                         for name, c in members.items() if isinstance(c, bytes)}
    manifest_path.write_text(json.dumps(manifest))


def test_doit_push_seeds_the_remote_from_a_warm_root(warmed_tp8):
    ws = warmed_tp8
    compiled = len(ws.compiles())
    remote = f"file://{ws.tmp / 'remote'}"
    refused = ws.doit("push", cwd=REPO, JITWARM_REMOTE=remote)
    assert refused.returncode == 3 and "read-write" in refused.stderr
    assert not (ws.tmp / "remote").exists()
    first = ws.doit("push", cwd=REPO, JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE="read-write")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 of 6 shapes are warm" in first.stdout and "6 pushed" in first.stdout
    again = ws.doit("push", cwd=REPO, JITWARM_REMOTE=remote, JITWARM_REMOTE_MODE="read-write")
    assert "6 exists" in again.stdout
    ws = second_root(ws, "runner-b")
    assert report(ws, warm(ws, remote))["totals"]["remote"]["hits"] == 6
    assert len(ws.compiles()) == compiled


@pytest.mark.one_layout  # the layouts' entries from known sources: tests/e2e/test_known_sources.py
def test_a_host_without_a_gpu_bakes_from_a_kernel_lock_and_the_gpu_runner_proves_it(ws):
    """nvcc and no GPU: the kernel lock's sources are compiled for the declared H200 and pushed
    unproven; the runner with the GPU pulls them, replays them, and compiles nothing. The lock was
    taken under an older nvcc than the fleet's: the bake renames its entries as deep_gemm keys them."""
    ws.env["JITWARM_KERNEL_QUEUE"] = "on"
    model_file(ws.models, "v3", TP8)
    assert warm(ws, "", JITWARM_GPU="H200").returncode == 0  # where the lock is taken (no remote)
    assert plain_doit(ws, "lock", JITWARM_GPU="H200").returncode == 0
    kernels = len(json.loads((ws.models / "v3.kernels.json").read_text())["recipes"])
    remote = ws.tmp / "remote"
    compiled = len(ws.compiles())
    ws.env["DG_JIT_NVCC_COMPILER"] = str(newer_nvcc(ws))  # the bake host's and the GPU runner's
    ws = second_root(ws, "bake")
    baked = warm(ws, f"file://{remote}", "read-write", JITWARM_GPU="H200", JITWARM_STAND_IN_GPU="none")
    out = baked.stdout + baked.stderr
    assert "6 shapes warmed under another toolchain" in out and "nvcc 13.0.88 -> 13.1.80" in out, out
    assert "baking 6 shapes for the declared H200: " in out and f"baked {kernels} entries" in out, out
    assert baked.returncode != 0 and "not proven, as no GPU is here to replay it" in out
    assert len(ws.compiles()) - compiled == kernels  # nvcc alone, each locked source once
    assert len(manifests(remote)) == 6
    assert not any("proof" in json.loads(m.read_text()) for m in manifests(remote))
    compiled = len(ws.compiles())
    ws = second_root(ws, "gpu-runner")
    proved = warm(ws, f"file://{remote}", JITWARM_GPU="H200")
    data = report(ws, proved)
    assert data["totals"]["remote"]["hits"] == 6 and len(ws.compiles()) == compiled, proved.stdout
    assert "replay compiled 0" in proved.stdout and set(ws.status(JITWARM_GPU="H200").values()) == {"U"}
    # The baked root itself (an image a GPU node inherits): proven in place, from its own records.
    (ws.models / "v3.kernels.json").unlink()
    ws = second_root(ws, "bake")
    assert set(ws.status(JITWARM_GPU="H200").values()) != {"U"}
    proved = warm(ws, "", JITWARM_GPU="H200")
    assert proved.returncode == 0, proved.stdout + proved.stderr
    assert "no shape to compile; replaying 6 shapes whose entries known sources give" in proved.stdout
    assert len(ws.compiles()) == compiled and "replay compiled 0" in proved.stdout
