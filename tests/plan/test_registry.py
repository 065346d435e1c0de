"""Registry validation: one line naming file, field and value; the shipped registry loads."""

import pytest

from conftest import REPO
from tasks.plan import registry, targets


def load_text(tmp_path, text, name="x"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return registry.load_file(path)


HEAD = 'hf_id = "org/model"\nconfig = {architectures = ["DeepseekV3ForCausalLM"]}\n'


@pytest.mark.parametrize("body, message", [
    ('[[launch]]\ntp = 8\n[[launch]]\ntp = "8"\n', 'launch[1].tp: expected a positive integer, got "8"'),
    ("[[launch]]\ntp = 0\n", "launch[0].tp: expected a positive integer, got 0"),
    ("[[launch]]\ntp = true\n", "launch[0].tp: expected a positive integer, got true"),
    ('[[launch]]\ntp = 8\nargs = "--dp 8"\n', 'launch[0].args: expected a list of strings, got "--dp 8"'),
    ('[[launch]]\ntp = 8\nargs = ["--dp", 8]\n', "launch[0].args[1]: expected a list of strings, got 8"),
    ("[[launch]]\ntp = 8\nbogus = 1\n", "launch[0].bogus: unknown key"),
    ('[[launch]]\ntp = 8\nm_list = "fastest"\n', 'launch[0].m_list: expected "default", "fast" or a list'),
    ('[[launch]]\ntp = 8\nargs = ["--dp", "x"]\n', "launch[0].args: argument --dp-size/--data-parallel-size: invalid int value: 'x'"),
    ('[[launch]]\ntp = 8\nenv = {FOO = "1"}\n', "launch[0].env.FOO: unknown key"),
    ("[[launch]]\ntp = 8\n[[launch]]\ntp = 8\n", "launch[1]: duplicates launch[0]"),
    ("launch = []\n", "launch: expected a non-empty list of [[launch]] tables, got []"),
    ("[[launch]\n", "invalid TOML"),
])
def test_errors_are_one_line_with_file_field_value(tmp_path, body, message):
    result = load_text(tmp_path, HEAD + body)
    assert isinstance(result, registry.RegistryError)
    assert message in result.message
    assert result.message.startswith(str(tmp_path / "x.toml") + ": ") or result.message.startswith("x.toml")
    assert "\n" not in result.message


def test_missing_and_conflicting_config(tmp_path):
    missing = load_text(tmp_path, 'hf_id = "org/model"\n[[launch]]\ntp = 8\n')
    assert "config: required" in missing.message
    no_hf = load_text(tmp_path, '[[launch]]\ntp = 8\nconfig = {}\n')
    assert "hf_id: required key missing" in no_hf.message or "launch[0].config: unknown key" in no_hf.message
    bad_id = load_text(tmp_path, 'hf_id = "nope"\nconfig = {}\n[[launch]]\ntp = 8\n')
    assert 'hf_id: expected "org/name", got "nope"' in bad_id.message


def test_shipped_registry_is_valid_and_named_stably():
    specs = registry.load(REPO / "models")
    assert not [s.message for s in specs if isinstance(s, registry.RegistryError)]
    names = {t.name for t in targets.expand(specs, environ={})}
    assert {n.split("-", 2)[0] for n in names} >= {"deepseek"}
    expected_models = {"deepseek-v3-0324", "deepseek-v3.2", "glm-5-fp8", "mimo-v2-flash", "mimo-v2.5", "minimax-m2",
                       "qwen3-235b-a22b-fp8", "glm-4.5-fp8", "longcat-flash-fp8", "kimi-k2-thinking"}
    assert {n.split("@")[0] for n in names} == expected_models
    # Stable: the same registry expands to the same names every time.
    assert names == {t.name for t in targets.expand(registry.load(REPO / "models"), environ={})}


def test_shipped_launch_args_match_sglang_ci():
    by_model = {s.name: s for s in registry.load(REPO / "models")}
    assert by_model["deepseek-v3.2"].launches[0].args == ("--dp", "8", "--enable-dp-attention")
    assert by_model["mimo-v2-flash"].launches[0].tp == 4
    assert "--mm-enable-dp-encoder" in by_model["mimo-v2.5"].launches[0].args


def test_bad_file_becomes_a_failing_target_and_others_still_expand(tmp_path):
    (tmp_path / "good.toml").write_text((REPO / "models" / "deepseek-v3-0324.toml").read_text())
    (tmp_path / "bad.toml").write_text(HEAD + '[[launch]]\ntp = "8"\n')
    expanded = {t.name: t for t in targets.expand(registry.load(tmp_path), environ={})}
    assert expanded["bad@invalid"].error.endswith('launch[0].tp: expected a positive integer, got "8"')
    good = [t for n, t in expanded.items() if n.startswith("good@")]
    assert good and good[0].error is None and len(good[0].works) == 6


def test_unknown_architecture_takes_the_fallback_path(tmp_path):
    path = tmp_path / "mimo.toml"
    path.write_text('hf_id = "x/step"\nconfig = {architectures = ["Step3p5ForCausalLM"]}\n[[launch]]\ntp = 4\n')
    [target] = targets.expand(registry.load(tmp_path), environ={})
    assert target.error is None and target.path == targets.FALLBACK
    assert "no shape plan; needs the fallback path (architecture Step3p5ForCausalLM)" in target.fallback_reason


def test_broken_config_is_an_error_not_a_fallback(tmp_path):
    path = tmp_path / "v3.toml"
    path.write_text((REPO / "models" / "deepseek-v3-0324.toml").read_text().replace("hidden_size = 7168",
                                                                                   'hidden_size = "7168"'))
    [target] = targets.expand(registry.load(tmp_path), environ={})
    assert target.error.endswith("config.hidden_size: expected a non-negative integer, got '7168'")


def test_spec_can_ask_for_the_fallback(tmp_path):
    path = tmp_path / "v3.toml"
    path.write_text((REPO / "models" / "deepseek-v3-0324.toml").read_text().replace(
        'tags = ["per-commit-8-gpu-h200"]', 'path = "fallback"\nfallback_timeout_s = 900'))
    [target] = targets.expand(registry.load(tmp_path), environ={})
    assert target.path == targets.FALLBACK and target.fallback_timeout_s == 900 and not target.works


def test_fast_warmup_env_comes_from_tuple_then_process(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text((REPO / "models" / "deepseek-v3-0324.toml").read_text()
                    + '\n[[launch]]\ntp = 8\nargs = ["--chunked-prefill-size", "16384"]\n'
                    + 'env = {SGLANG_JIT_DEEPGEMM_FAST_WARMUP = "0"}\n')
    plain, pinned = targets.expand(registry.load(tmp_path), environ={"SGLANG_JIT_DEEPGEMM_FAST_WARMUP": "1"})
    # fast at 8192: 1..1024, then 1026..2046/2, 2048..4092/4, 4096..8184/8, and 8192
    assert len(plain.works[0].m_values) == 1024 + 511 + 512 + 512 + 1
    assert len(pinned.works[0].m_values) == 32768


def test_an_embedded_dsa_config_must_say_whether_its_indexer_rope_is_interleaved(tmp_path):
    text = (REPO / "models" / "deepseek-v3.2.toml").read_text()
    assert "indexer_rope_interleave = false" in text
    (tmp_path / "v32.toml").write_text(text.replace("indexer_rope_interleave = false\n", ""))
    [error] = registry.load(tmp_path)
    assert isinstance(error, registry.RegistryError)
    assert error.message.endswith("v32.toml: config.indexer_rope_interleave: required with index_topk (true or "
                                  "false, as the checkpoint's config.json has it; absent there means false)")
    assert "\n" not in error.message
