"""M lists follow sglang's compile_utils.update_deep_gemm_config exactly."""

from tasks.plan import launch_args, mlists


def test_fast_list_for_16384_has_3072_values():
    values = mlists.fast_m_list(16384)
    assert len(values) == 3072
    assert values[:1024] == list(range(1, 1025))
    assert values[-1] == 16384
    # step 16 in the last octave, as sglang's comment says: 8192, 8208, ...
    assert values[-3:] == [16352, 16368, 16384]


def test_fast_list_caps_prefill_at_32768_and_handles_disabled_chunking():
    assert mlists.fast_m_list(1 << 20)[-1] == 32768
    assert mlists.fast_m_list(-1) == mlists.fast_m_list(16384)
    assert mlists.fast_m_list(1024) == list(range(1, 1025))


def test_default_list_rules():
    assert mlists.default_m_list(8192) == list(range(1, 16385))
    assert len(mlists.default_m_list(4096)) == 16384
    assert len(mlists.default_m_list(-1)) == 65536
    assert len(mlists.default_m_list(12000)) == 24000
    assert len(mlists.default_m_list(1 << 20)) == 131072


def test_contig_keeps_multiples_of_alignment():
    values = mlists.default_m_list(8192)
    contig = mlists.for_kind(True, values)
    assert contig[:3] == [128, 256, 384] and len(contig) == 128
    assert all(m % 128 == 0 for m in contig)
    assert mlists.for_kind(False, values) == values


def test_dp_attention_divides_chunked_prefill_before_the_warmup():
    # parallel_hook.py:326-332
    flags = launch_args.parse(["--attn-dp-size", "8"], 8)
    size, note = mlists.effective_chunked_prefill(flags)
    assert size == 1024 and "attention DP 8" in note and "assumed" in note
    fast = mlists.policy(flags, fast_warmup=True, override=None)
    assert fast.values() == list(range(1, 1025))


def test_default_chunked_prefill_follows_gpu_memory():
    # memory_hook.py:89-170 by GPU memory; H200 reports 143771 MiB, B200 183359 MiB.
    flags = launch_args.parse([], 8)
    assert [mlists.effective_chunked_prefill(flags, mib)[0] for mib in (16384, 40960, 81559, 143771, 183359)] \
        == [2048, 4096, 8192, 8192, 16384]
    b200 = mlists.policy(flags, False, None, gpu_memory_mib=183359)
    assert len(b200.values()) == 32768 and "179 GiB GPU" in b200.describe()
    assert len(mlists.policy(flags, False, None, gpu_memory_mib=143771).values()) == 16384


def test_explicit_override_and_modes():
    flags = launch_args.parse(["--chunked-prefill-size", "16384"], 8)
    assert mlists.policy(flags, False, None).values() == list(range(1, 32769))
    assert len(mlists.policy(flags, False, "fast").values()) == 3072
    assert len(mlists.policy(flags, True, "default").values()) == 32768
    assert mlists.policy(flags, False, (64, 1, 64)).values() == [1, 64]
