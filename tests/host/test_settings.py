"""Settings (tasks/host/settings.py): pyproject defaults, environment overrides, one-line errors."""

import pytest

from tasks.host import settings


def test_environment_overrides_and_defaults(tmp_path):
    conf = settings.load({"JITWARM_MODELS_DIR": str(tmp_path), "JITWARM_JOBS": "3", "JITWARM_SHAPE_TIMEOUT_S": "60"})
    assert (conf.models_dir, conf.jobs, conf.shape_timeout_s, conf.remote) == (tmp_path, 3, 60.0, None)
    relative = settings.load({})
    assert relative.models_dir == settings.REPO_ROOT / "models" and relative.shape_timeout_s == 1800


@pytest.mark.parametrize("env, says", [
    ({"JITWARM_JOBS": "-1"}, "jitwarm: jobs: expected a number of workers (0 = all cores), got '-1'"),
    ({"JITWARM_SHAPE_TIMEOUT_S": "soon"},
     "jitwarm: shape timeout: expected a positive number of seconds, got 'soon'"),
    ({"JITWARM_REMOTE": "s3://key:secret@bucket/p"}, "jitwarm: JITWARM_REMOTE: credentials in the URL are not accepted"),
])
def test_bad_values_are_one_line_errors(env, says):
    with pytest.raises(SystemExit) as info:
        settings.load(env)
    assert str(info.value).startswith(says) and "\n" not in str(info.value) and "secret" not in str(info.value)


@pytest.mark.parametrize("table, says", [
    ({"shape_timout_s": 60}, "tool.jitwarm.shape_timout_s: unknown key (did you mean 'shape_timeout_s'?)"),
    ({"remote_modes": "read"}, "tool.jitwarm.remote_modes: unknown key (did you mean 'remote_mode'?)"),
    ({"colour": "red"}, "tool.jitwarm.colour: unknown key; known: models_dir, "),
    ({"jobs": "many"}, "tool.jitwarm.jobs: Expected `int`, got `str`"),
])
def test_a_misspelt_or_mistyped_pyproject_key_is_one_line_not_a_silent_default(table, says):
    # Regression: `shape_timout_s = 60` was silently ignored, and the 1800 s default used.
    with pytest.raises(SystemExit) as info:
        settings._check_table(table)
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, value", [("JITWARM_PROGRESS", "bogus"), ("JITWARM_NOOP_STAMP", "maybe"),
                                         ("JITWARM_VERIFY", "trust-me"), ("JITWARM_KERNEL_QUEUE", "no")])
def test_a_word_valued_variable_takes_only_its_words(name, value):
    with pytest.raises(SystemExit, match=f"jitwarm: {name}: expected one of .*, got '{value}'"):
        settings.load({name: value})
    settings.load({name: settings.ENV_WORDS[name][0]})  # its default is accepted
