"""jitwarm parses launch args with sglang 0.5.23's own option table.

The table is rebuilt here from the wheel's argument sources (tests/data, each file checked
against the wheel's RECORD digest), so it cannot drift from what sglang 0.5.23 ships.
"""

import importlib.util
import tarfile

import pytest
from conftest import REPO

from tasks.plan import launch_args, mlists, sglang_table, targets
from tasks.plan.launch_args import ArgsError
from tasks.plan.planner import Kind, PlanEnv, plan

SOURCES = REPO / "tests" / "data" / "sglang-0.5.23-args-src.tar.gz"


def _tool():
    spec = importlib.util.spec_from_file_location("sglang_args_table", REPO / "tools" / "sglang_args_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_what_sglang_0_5_23_builds_from_its_own_source(tmp_path):
    with tarfile.open(SOURCES) as tar:
        tar.extractall(tmp_path, filter="data")
    tool = _tool()
    committed = sglang_table.table()
    for path, digest in committed["sources"].items():
        assert tool.record_hash(tmp_path / path) == digest, path  # the wheel's RECORD digest
    rebuilt = tool.table_from(tmp_path, "0.5.23")
    assert rebuilt["sources"] == committed["sources"]
    assert rebuilt["options"] == committed["options"]
    assert len(committed["options"]) > 500


def test_a_changed_option_in_the_source_changes_the_table(tmp_path):
    with tarfile.open(SOURCES) as tar:
        tar.extractall(tmp_path, filter="data")
    fields = tmp_path / "sglang/srt/arg_groups/fields/schedule.py"
    fields.write_text(fields.read_text().replace("chunked_prefill_size:", "chunked_prefill_tokens:"))
    rebuilt = _tool().table_from(tmp_path, "0.5.23")
    assert sglang_table.differences(rebuilt["options"]) == {
        "only in the installed sglang": ["--chunked-prefill-tokens"], "only in jitwarm's table": ["--chunked-prefill-size"]}


@pytest.mark.parametrize("args, field, value", [
    # argparse takes any unique prefix of a long option (server_args.py:679).
    (["--chunked-prefill", "16384"], "chunked_prefill_size", 16384),
    (["--moe-a2a", "deepep"], "moe_a2a_backend", "deepep"),
    (["--attn-dp", "8"], "attn_dp_size", 8),
    (["--speculative-algo", "EAGLE"], "speculative_algorithm", "EAGLE"),
    (["--fp8-gemm=deep_gemm"], "fp8_gemm_backend", "deep_gemm"),
    (["--ep", "4"], "ep", 4),  # an alias of --ep-size in 0.5.23 (fields/...: aliases)
    (["--cuda-graph-max-bs-d", "64"], "cuda_graph_max_bs_decode", 64),
])
def test_prefixes_are_read_as_sglang_reads_them(args, field, value):
    assert getattr(launch_args.parse(args, 8), field) == value


def test_the_issue_examples_plan_what_sglang_runs():
    import tomllib

    config = tomllib.loads((REPO / "models" / "deepseek-v3-0324.toml").read_text())["config"]

    def kinds(args):
        flags = launch_args.parse(args, 8)
        return {w.shape.kind for w in targets.works_for(plan(config, flags, PlanEnv(), 143771),
                                                        mlists.policy(flags, False, None, 143771))}, flags

    got, flags = kinds(["--enable-dp-attention", "--dp-size", "8", "--moe-a2a", "deepep"])
    assert (flags.attn_dp_size, flags.ep) == (8, 8)
    assert {Kind.CONTIG, Kind.MASKED} <= got  # the experts are warmed
    short = mlists.policy(launch_args.parse(["--chunked-prefill", "32768"], 8), False, None, 143771)
    assert short == mlists.policy(launch_args.parse(["--chunked-prefill-size", "32768"], 8), False, None, 143771)


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--enable-t", "x"], "ambiguous option: --enable-t could match --enable-tf32-matmul, "),
    (["--e"], " and "),  # hundreds of matches, cut to a few
    (["--moe-runner-backend", "fast"], "argument --moe-runner-backend: invalid choice: 'fast'"),
    (["--cuda-graph-backend-decode", "tc_piecewise"], "--cuda-graph-backend-decode"),
    (["--help"], "--help is not a launch argument"),
    (["--config", "/etc/sglang.yaml"], "--config /etc/sglang.yaml: jitwarm cannot read the server's config file"),
    (["--enable-deepep-moe"], "--enable-deepep-moe was removed from sglang; use --moe-a2a-backend deepep"),
    (["--cuda-graph-config", "{bad"], "--cuda-graph-config must be JSON"),
    (["--cuda-graph-config", '{"verify": {}}'], "unknown phase 'verify'"),
])
def test_what_sglang_refuses_is_refused_in_one_line(args, message):
    with pytest.raises(ArgsError) as info:
        launch_args.parse(args, 8)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


def test_options_no_rule_reads_are_accepted_as_the_server_accepts_them():
    flags = launch_args.parse(["--port", "30000", "--mem-fraction-static", "0.85", "--trust-remote-code",
                               "--context-length", "16k", "--no-enable-tf32-matmul", "--model", "/m"], 8)
    assert flags == launch_args.ServerFlags(tp=8)


def test_every_spelling_of_decode_graphs_off_is_folded_in_sglangs_precedence():
    # cuda_graph_hook.py:53-98: legacy flag < per-phase switch < backend selector < JSON config.
    assert launch_args.parse(["--disable-cuda-graph"], 8).disable_decode_cuda_graph
    assert launch_args.parse(["--cuda-graph-backend-decode", "disabled"], 8).disable_decode_cuda_graph
    assert not launch_args.parse(["--disable-cuda-graph", "--cuda-graph-backend-decode", "full"], 8).disable_decode_cuda_graph
    config = launch_args.parse(["--cuda-graph-config", '{"decode": {"backend": "full", "max_bs": 64, "bs": [1, 8]}}',
                                "--disable-decode-cuda-graph"], 8)
    assert (config.disable_decode_cuda_graph, config.cuda_graph_max_bs_decode, config.cuda_graph_bs_decode) == (
        False, 64, (1, 8))


def test_the_defaults_jitwarm_assumes_are_sglangs():
    defaults = launch_args.ServerFlags(tp=1)
    for dest, field in launch_args._READ.items():
        declared = sglang_table.default_of(dest)
        assert any(r["dest"] == dest for r in sglang_table.table()["options"]), dest
        if declared is not None and field not in ("tp",):
            assert getattr(defaults, field) == declared, (dest, declared)
