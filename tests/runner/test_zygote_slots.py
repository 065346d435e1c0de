"""When the zygote starts a replay (tasks/runner/child/zygote._run_children): a compile
worker left only with deferred calls waits on the kernel queue, so its slot goes to a replay."""

import time
from types import SimpleNamespace

from tasks.runner.child import compile, zygote


def _job(tmp_path, name):
    return SimpleNamespace(log=str(tmp_path / f"{name}.log"), status=str(tmp_path / f"{name}.status"), env={})


def _times(tmp_path, monkeypatch, compile_child):
    """(when the compile worker ended, when the replay started), with one slot for both."""
    def replay(job):
        (tmp_path / "replay-began").write_text(repr(time.time()))
        return 0

    def worker(job, take, made, stage):
        compile_child(stage)
        (tmp_path / "worker-ended").write_text(repr(time.time()))
        return 0

    monkeypatch.setattr(zygote, "_compile_child", worker)  # forked from this process, the child runs it
    kid = zygote._CompileKid(_job(tmp_path, "compile"), take=None, count=None)
    zygote._run_children([kid], [zygote._Kid(_job(tmp_path, "replay"), replay)], parallel=1, timeout=30,
                         gpus=zygote.Gpus([]), first_done=lambda seconds, pids: None)
    return float((tmp_path / "worker-ended").read_text()), float((tmp_path / "replay-began").read_text())


def test_a_ready_replay_takes_the_slot_of_a_worker_that_only_waits_for_its_kernels(tmp_path, monkeypatch):
    def drains(stage):
        stage(compile.DRAINING)
        time.sleep(1.0)

    ended, began = _times(tmp_path, monkeypatch, drains)
    assert began < ended - 0.5


def test_a_worker_still_taking_calls_keeps_its_slot(tmp_path, monkeypatch):
    ended, began = _times(tmp_path, monkeypatch, lambda stage: (stage(compile.SWEEPING), time.sleep(0.5)))
    assert began >= ended


def _standbys(tmp_path, shapes=3, slots=2, ready=lambda i: False, entries_in=lambda i: True):
    jobs = [SimpleNamespace(log=str(tmp_path / f"shape-{i}.log"), status=str(tmp_path / f"shape-{i}.status"),
                            plan=SimpleNamespace(staging=str(tmp_path / f"view-{i}"))) for i in range(shapes)]
    plan = SimpleNamespace(replays=jobs, cache=SimpleNamespace(root=str(tmp_path)), module="m", parallel_replay=slots)
    return zygote._Standbys(plan, ready, entries_in, lambda: True)


def test_standbys_take_ready_shapes_as_slots_free_up_and_are_let_go_when_none_is_left(tmp_path):
    ready = set()
    standbys = _standbys(tmp_path, ready=lambda i: i in ready)
    kids = standbys.kids()
    assert len(kids) == 2 and all(kid.idle() for kid in kids)  # they need no slot while they wait
    standbys.waiting += kids
    standbys.assign(room=2)
    assert [kid.shape.value for kid in kids] == [-1, -1]  # no shape is ready yet
    ready |= {2, 0}
    standbys.assign(room=1)
    assert [kid.shape.value for kid in kids] == [0, -1] and not kids[0].idle()
    standbys.assign(room=1)
    assert [kid.shape.value for kid in kids] == [0, 2]
    assert standbys.ended(kids[0], "exited with code 0") and standbys.unassigned == [1]  # a new one for shape 1
    standbys.compiled = True  # every worker has ended: whatever is left is replayed now
    [late] = standbys.ended(kids[1], "exited with code 0")
    standbys.waiting.append(late)
    standbys.assign(room=1)
    assert late.shape.value == 1 and standbys.unassigned == []


def test_after_stub_discovery_a_shape_waits_for_its_entries_even_once_every_worker_has_ended(tmp_path):
    written = set()
    standbys = _standbys(tmp_path, shapes=2, slots=2, ready=lambda i: True, entries_in=lambda i: i in written)
    kids = standbys.kids()
    standbys.waiting += kids
    standbys.compiled = True  # the stub workers are long done; the kernel queue still compiles
    standbys.assign(room=2)
    assert [kid.shape.value for kid in kids] == [-1, -1]
    written.add(1)
    standbys.assign(room=2)
    assert [kid.shape.value for kid in kids] == [1, -1] and standbys.unassigned == [0]


def test_a_standby_that_cannot_start_hands_every_shape_left_to_plain_replays(tmp_path):
    standbys = _standbys(tmp_path, shapes=3, slots=2)
    kids = standbys.kids()
    standbys.waiting += kids
    fallback = standbys.ended(kids[0], "exited with code 3")  # e.g. deep_gemm cannot be imported
    assert [kid.i for kid in fallback] == [0, 1, 2] and all(isinstance(k, zygote._ShapeReplayKid) for k in fallback)
    assert kids[1].shape.value == zygote._StandbyKid.NONE  # the other one is let go
    assert standbys.ended(kids[1], "exited with code 0") == []
