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
    assert (flags.tp, flags.dp, flags.enable_dp_attention, flags.attn_tp) == (4, 2, True, 2)
    assert flags.chunked_prefill_size == 4096 and flags.moe_runner_backend == "deep_gemm"


def test_deepep_forces_ep_to_tp():
    flags = launch_args.parse(["--moe-a2a-backend", "deepep"], 8)
    assert flags.deepep and flags.ep == 8


@pytest.mark.parametrize("args, message", [
    (["--dp", "x"], '--dp expects an integer, got "x"'),
    (["--dp"], "--dp expects a value"),
    (["--tp", "4"], "--tp 4 in args contradicts tp = 8"),
    (["--dp", "3", "--enable-dp-attention"], "--dp 3 does not divide tp 8"),
    (["--deepep-mode", "fast"], 'expects one of auto, normal, low_latency, got "fast"'),
    (["--ep", "0"], "--ep expects a positive integer"),
])
def test_bad_values_give_one_line(args, message):
    with pytest.raises(ArgsError, match=message.replace("(", r"\(")) as info:
        launch_args.parse(args, 8)
    assert "\n" not in str(info.value)
