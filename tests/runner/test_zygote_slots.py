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
    zygote._run_children([kid], [zygote._Kid(_job(tmp_path, "replay"), replay)], ready=lambda kid: True,
                         parallel=1, timeout=30, gpus=zygote.Gpus([]), first_done=lambda seconds, pids: None)
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
