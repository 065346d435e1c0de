import pytest

from tasks.plan import launch_args
from tasks.plan.launch_args import ArgsError


def test_equals_and_space_forms_hash_the_same():
    a = launch_args.launch_hash(8, ["--dp", "8", "--enable-dp-attention"], {}, None)
    b = launch_args.launch_hash(8, ["--dp=8", "--enable-dp-attention"], {}, None)
    assert a == b


def test_hash_covers_every_arg_env_and_m_list():
    base = launch_args.launch_hash(8, ["--dp", "8"], {}, None)
    assert launch_args.launch_hash(8, ["--dp", "8", "--attention-backend", "fa3"], {}, None) != base
    assert launch_args.launch_hash(4, ["--dp", "8"], {}, None) != base
    assert launch_args.launch_hash(8, ["--dp", "8"], {"SGLANG_USE_DEEPGEMM_BMM": "1"}, None) != base
    assert launch_args.launch_hash(8, ["--dp", "8"], {}, "fast") != base


def test_parses_shape_flags_and_ignores_others():
    flags = launch_args.parse(["--dp", "2", "--enable-dp-attention", "--attention-backend", "fa3",
                               "--mm-attention-backend=fa3", "--chunked-prefill-size=4096",
                               "--moe-runner-backend", "deep_gemm"], 4)
    # The deprecated alias (server_args.py:417-423, parallel_hook.py:39-61): attention DP 2, no replicas.
    assert (flags.tp, flags.dp, flags.attn_dp_size, flags.attn_tp) == (4, 1, 2, 2)
    assert flags.chunked_prefill_size == 4096 and flags.moe_runner_backend == "deep_gemm"


def test_attn_dp_size_is_the_current_spelling_of_dp_attention():
    current = launch_args.parse(["--attn-dp-size", "8"], 8)
    assert current == launch_args.parse(["--dp", "8", "--enable-dp-attention"], 8)
    assert current == launch_args.parse(["--attention-data-parallel-size=8"], 8)
    assert (current.attn_dp_size, current.attn_tp, current.dp) == (8, 1, 1)
    # Plain --dp is data-parallel replicas: attention keeps the full tp.
    assert launch_args.parse(["--dp", "2"], 8).attn_tp == 8


def test_all_to_all_backends_span_experts_over_tp():
    # overrides.py:1578-1620: _a2a_ep_size
    for backend in ("deepep", "deepep_v2", "mooncake", "nixl", "pplx"):
        assert launch_args.parse(["--moe-a2a-backend", backend], 8).ep == 8
    assert launch_args.parse(["--ep", "2"], 8).ep == 2


@pytest.mark.parametrize("flag, successor", [
    ("--enable-deepep-moe", "--moe-a2a-backend deepep"),
    ("--enable-ep-moe", "--ep-size <tp>"),
])
def test_removed_flags_are_refused_with_their_successor(flag, successor):
    with pytest.raises(ArgsError, match=f"{flag} was removed from sglang; use {successor}"):
        launch_args.parse([flag], 8)


def test_flags_that_change_which_gemms_run_are_read():
    flags = launch_args.parse(["--fp8-gemm-backend", "triton", "--ep-num-redundant-experts", "32",
                               "--enforce-shared-experts-fusion", "--enable-two-batch-overlap",
                               "--speculative-algorithm", "EAGLE"], 8)
    assert (flags.fp8_gemm_backend, flags.ep_num_redundant_experts) == ("triton", 32)
    assert flags.enforce_shared_experts_fusion and flags.enable_two_batch_overlap
    assert flags.speculative_algorithm == "EAGLE"


def test_deepep_forces_ep_to_tp():
    flags = launch_args.parse(["--moe-a2a-backend", "deepep"], 8)
    assert flags.deepep and flags.ep == 8


@pytest.mark.parametrize("args, message", [
    # argparse's own words, as sglang's server prints them.
    (["--dp", "x"], "argument --dp-size/--data-parallel-size: invalid int value: 'x'"),
    (["--dp"], "argument --dp-size/--data-parallel-size: expected one argument"),
    (["--tp", "4"], "--tp-size 4 in args contradicts tp = 8"),
    (["--dp", "3", "--enable-dp-attention"], "--attn-dp-size 3 does not divide tp 8"),
    (["--attn-dp-size", "3"], "--attn-dp-size 3 does not divide tp 8"),
    (["--fp8-gemm-backend", "fast"], "argument --fp8-gemm-backend: invalid choice: 'fast' (choose from 'auto', "),
    (["--moe-dense-tp-size", "2"], "--moe-dense-tp-size 2: sglang takes only 1 or tp (8)"),
    (["--ep-num-redundant-experts", "-1"], "expects a non-negative integer"),
    (["--deepep-mode", "fast"], "argument --deepep-mode: invalid choice: 'fast' (choose from 'auto', 'normal', 'low_latency')"),
    (["--ep", "0"], "--ep-size expects a positive integer, got 0"),
])
def test_bad_values_give_one_line(args, message):
    with pytest.raises(ArgsError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        launch_args.parse(args, 8)
    assert "\n" not in str(info.value)
