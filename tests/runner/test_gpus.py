"""How the pool's children are put on GPUs (tasks/runner/child/zygote.Gpus)."""

from collections import Counter

from tasks.runner.child.zygote import Gpus


def test_children_go_to_the_least_loaded_gpu_and_never_past_its_slots():
    gpus = Gpus([("0", 2), ("1", 2), ("2", 1)])
    taken = [gpus.take() for _ in range(5)]
    assert Counter(taken) == {"0": 2, "1": 2, "2": 1} and taken[:3] == ["0", "1", "2"]
    assert gpus.take() is Gpus.FULL  # every GPU holds what its memory allows: the next child waits
    gpus.give("1")
    assert gpus.take() == "1" and gpus.take() is Gpus.FULL


def test_unknown_gpus_leave_cuda_its_default():
    gpus = Gpus([])
    assert [gpus.take() for _ in range(3)] == [None, None, None]
    gpus.give(None)
