import pytest

from tasks.plan import locks, registry, targets

REAL_LINES = [
    "[2026-11-22 10:00:01 TP0] Try DeepGEMM JIT Compiling for <GEMM_NT_F8F8BF16> N=2112, K=7168, "
    "num_groups=1 with all Ms. It only takes a little time (typically 1 sec) if you have run "
    "`python3 -m sglang.compile_deep_gemm`. ",
    "INFO compile_utils.py:120: Try DeepGEMM JIT Compiling for GROUPED_GEMM_NT_F8F8BF16_MASKED "
    "N=4096, K=7168, num_groups=32 with all Ms.",
    "[TP0] Try DeepGEMM JIT Compiling for <GEMM_NT_F8F8BF16> N=2112, K=7168, num_groups=1 with all Ms.",
    "unrelated line N=1, K=2",
]
MIMO = 'hf_id = "x/mimo"\nconfig = {architectures = ["MiMoForCausalLM"]}\n[[launch]]\ntp = 4\nargs = ["--dp", "2"]\n'


def write(model_file, capture) -> None:
    locks.path_for(model_file).write_bytes(locks.with_capture(model_file, capture))


def capture(spec, shapes, **kw):
    launch = spec.launches[0]
    values = dict(launch=0, launch_hash=launch.hash, tp=4, args=launch.args, captured_at="2026-11-22T00:00:00+00:00",
                  sglang="0.5.23", deep_gemm="sgl-deep-gemm 0.2.3.post2", shapes=shapes)
    values.update(kw)
    return locks.Capture(**values)


def test_parse_log_reads_sglang_lines_once_each_in_order():
    assert locks.parse_log(REAL_LINES) == [("GEMM_NT_F8F8BF16", 2112, 7168, 1),
                                          ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32)]


def test_write_read_round_trip_keeps_other_launches(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    spec = registry.load_file(path)
    write(path, capture(spec, (("GEMM_NT_F8F8BF16", 2112, 7168, 1),)))
    write(path, capture(spec, (), launch=1, launch_hash="other"))
    read = locks.read(path)
    assert read[0].shapes == (("GEMM_NT_F8F8BF16", 2112, 7168, 1),) and read[1].shapes == ()
    assert locks.path_for(path).read_text().startswith("# GEMM shapes")


def test_malformed_lock_is_one_line_error(tmp_path):
    path = tmp_path / "m.toml"
    locks.path_for(path).write_text('[[capture]]\nlaunch = 0\nshapes = ["nonsense"]\n')
    with pytest.raises(locks.LockError) as info:
        locks.read(path)
    assert "m.lock.toml: capture[0]: malformed" in str(info.value) and "\n" not in str(info.value)


def expand_with(tmp_path, shapes, **kw):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    spec = registry.load_file(path)
    write(path, capture(spec, shapes, **kw))
    [target] = targets.expand(registry.load(tmp_path), environ={})
    return target


def test_matching_lock_makes_a_locked_target(tmp_path):
    target = expand_with(tmp_path, (("GEMM_NT_F8F8BF16", 2112, 7168, 1), ("GROUPED_GEMM_NT_F8F8BF16_CONTIG", 4096, 7168, 32)))
    assert target.path == targets.LOCKED and len(target.works) == 2 and target.plan_hash
    contig = next(w for w in target.works if w.shape.groups == 32)
    assert all(m % 128 == 0 for m in contig.m_values)


def test_lock_for_other_args_is_ignored(tmp_path):
    target = expand_with(tmp_path, (("GEMM_NT_F8F8BF16", 2112, 7168, 1),), launch_hash="0" * 64)
    assert target.path == targets.FALLBACK and "captured for other launch args" in target.lock_note
    assert target.plan_hash is None


def test_lock_with_kernel_types_jitwarm_cannot_run_plans_the_rest_and_names_them(tmp_path):
    # All seven sglang 0.5.23 types have executors; a later release's new type would not.
    both = expand_with(tmp_path, (("GEMM_NT_F8F8BF16", 2112, 7168, 1), ("GEMM_NT_FP4FP4BF16", 256, 7168, 1),
                                  ("GEMM_NT_F8F8BF16_BLOCK32", 2112, 7168, 1), ("GEMM_NT_MX8", 64, 128, 1)))
    assert both.path == targets.LOCKED and len(both.works) == 2
    assert both.unsupported == ("GEMM_NT_FP4FP4BF16 N=256 K=7168 num_groups=1",
                                "GEMM_NT_MX8 N=64 K=128 num_groups=1")
    line = both.unsupported_line
    assert "\n" not in line and "GEMM_NT_FP4FP4BF16, GEMM_NT_MX8" in line and "m.lock.toml" in line
    assert "of a kernel type jitwarm cannot run" in both.doc
    # The unsupported shapes count in the plan: a lock that drops one is another plan.
    fewer = expand_with(tmp_path, (("GEMM_NT_F8F8BF16", 2112, 7168, 1),))
    assert fewer.plan_hash != both.plan_hash and fewer.plan_hash == targets.plan_hash(fewer.works)


def test_empty_lock_holds_only_for_its_toolchain(tmp_path):
    target = expand_with(tmp_path, ())
    # This machine has neither sglang nor deep_gemm: the versions differ from the capture's.
    assert target.path == targets.FALLBACK and "empty lock was captured with sglang 0.5.23" in target.lock_note
    same = expand_with(tmp_path, (), sglang=None, deep_gemm=None)
    assert same.path == targets.LOCKED and same.works == []


MASKED = ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 7168, 2048, 16)
CONTIG = ("GROUPED_GEMM_NT_F8F8BF16_CONTIG", 4096, 7168, 8)


def watched(spec, shapes, **kw):
    launch = spec.launches[0]
    values = dict(launch=0, launch_hash=launch.hash, recorded_at="2026-12-02T00:00:00+00:00",
                  command="python -m sglang.launch_server --tp 4", sglang=None, deep_gemm=None, shapes=shapes)
    values.update(kw)
    return locks.Watched(**values)


def record(path, item) -> None:
    locks.path_for(path).write_bytes(locks.with_watched(path, item))


def test_watched_shapes_merge_and_survive_a_new_capture(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    spec = registry.load_file(path)
    write(path, capture(spec, (("GEMM_NT_F8F8BF16", 2112, 7168, 1),)))
    record(path, watched(spec, (MASKED,)))
    record(path, watched(spec, (MASKED, CONTIG)))
    captures, found = locks.read_all(path)
    assert found[0].shapes == (MASKED, CONTIG) and captures[0].shapes == (("GEMM_NT_F8F8BF16", 2112, 7168, 1),)
    write(path, capture(spec, ()))  # a fallback re-capture keeps what watches recorded
    assert locks.read_all(path)[1][0].shapes == (MASKED, CONTIG)
    # Shapes recorded for other launch args are replaced, not merged into.
    record(path, watched(spec, (CONTIG,), launch_hash="0" * 64))
    assert locks.read_all(path)[1][0].shapes == (CONTIG,)


def test_a_broken_lock_is_not_overwritten_by_a_watch(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    locks.path_for(path).write_text('[[capture]]\nlaunch = "x"\n')
    with pytest.raises(locks.LockError):
        locks.with_watched(path, watched(registry.load_file(path), (MASKED,)))


def test_watched_shapes_join_a_planned_targets_plan(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    [before] = targets.expand(registry.load(tmp_path), environ={})
    record(path, watched(registry.load_file(path), (MASKED,)))
    [after] = targets.expand(registry.load(tmp_path), environ={})
    assert after.path == before.path == targets.FALLBACK  # MiMo without a config is not planned: no change
    write(path, capture(registry.load_file(path), (("GEMM_NT_F8F8BF16", 2112, 7168, 1),)))
    [locked] = targets.expand(registry.load(tmp_path), environ={})
    assert locked.path == targets.LOCKED and len(locked.works) == 2
    added = next(w for w in locked.works if w.shape.groups == 16)
    assert locked.plan.uses[added.shape][0].startswith(targets.WATCHED_USE)


def test_watched_shapes_for_other_launch_args_are_ignored_with_a_note(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MIMO)
    spec = registry.load_file(path)
    write(path, capture(spec, (("GEMM_NT_F8F8BF16", 2112, 7168, 1),)))
    record(path, watched(spec, (MASKED,), launch_hash="0" * 64))
    [target] = targets.expand(registry.load(tmp_path), environ={})
    assert len(target.works) == 1 and "other launch args (00000000" in target.watch_note
