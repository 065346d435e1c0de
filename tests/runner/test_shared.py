"""The parent's side of shared replays (tasks/runner/shared.py): a pulled shape's outcome from its pieces."""

from conftest import cache, make_entry
from tasks.runner import shared
from tasks.runner.child.protocol import CAPTURED, PieceResult, PieceStatus, Shape, piece_path, status_path
from tasks.state import records

SHAPE = Shape("GEMM_NT_F8F8BF16", 2112, 7168, 1)


def spec(tmp_path, m_count=600):
    return shared.spec(tmp_path / "shared", cache(tmp_path / "root"), "deep_gemm",
                       [(SHAPE, tuple(range(1, m_count + 1)))], slots=4)


def test_a_shape_is_done_when_every_piece_is_and_gets_the_manifest_plus_what_its_calls_touched(tmp_path):
    s = spec(tmp_path)
    assert len(s.pieces) > 1 and sum(count for _, _, count in s.pieces) == 600
    for name in ("kernel.manifest.1", "kernel.opened.2", "kernel.created.3"):
        make_entry(tmp_path / "root", name)
    assert shared.outcome(s, 0, ["kernel.manifest.1"], cache(tmp_path / "root")) is None  # still running
    for i, (_, _, count) in enumerate(s.pieces):
        records.write_json(piece_path(s, i), PieceResult(
            log=f"log-{i % 2}", calls=count, launches=CAPTURED, seconds=0.5,
            opened=["kernel.opened.2"] if i == 0 else [], created=["kernel.created.3"] if i == 1 else []))
    status, result, log = shared.outcome(s, 0, ["kernel.manifest.1"], cache(tmp_path / "root"))
    assert status == "exited with code 0" and str(log) == "log-0"
    assert set(result.entries) == {"kernel.manifest.1", "kernel.opened.2", "kernel.created.3"}
    got = result.entries["kernel.created.3"]
    assert (got.binary, got.size, got.root) == ("kernel.cubin", 6, str(tmp_path / "root"))
    assert result.new == ["kernel.created.3"] and result.calls == 600 and result.processes == 2


def test_a_piece_that_failed_or_never_ran_fails_the_shape(tmp_path):
    s = spec(tmp_path, m_count=512)
    assert len(s.pieces) == 2
    records.write_json(piece_path(s, 0), PieceResult(log="log-0", error="RuntimeError: CUDA error"))
    assert shared.outcome(s, 0, [], cache(tmp_path), pool_ended="exited with code 0")[0] == (
        "failed: RuntimeError: CUDA error")
    records.write_json(piece_path(s, 0), PieceResult(log="log-0", calls=256, launches=CAPTURED))
    records.write_json(status_path(s, 1), PieceStatus("timed out after 3s", "log-1"))
    assert shared.outcome(s, 0, [], cache(tmp_path))[:1] == ("timed out after 3s",)
    status_path(s, 1).unlink()
    assert shared.outcome(s, 0, [], cache(tmp_path), pool_ended="killed by SIGKILL")[0] == (
        "did not run: the pool killed by SIGKILL")
