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
