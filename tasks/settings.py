"""Project settings: [tool.jitwarm] in pyproject.toml, overridable by environment variables."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    models_dir: Path
    shape_timeout_s: float
    jobs: int = 0  # compile workers at most; 0 = every usable core
    junit_xml: Path | None = None  # where `doit warm` writes JUnit XML; None = nowhere
    report_json: Path | None = None  # where it writes the JSON report (docs/report.schema.json)


def load(environ=None) -> Settings:
    env = os.environ if environ is None else environ
    try:
        with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
            table = tomllib.load(fh).get("tool", {}).get("jitwarm", {})
    except (OSError, tomllib.TOMLDecodeError):
        table = {}
    models = Path(env.get("JITWARM_MODELS_DIR") or table.get("models_dir", "models"))
    if not models.is_absolute():
        models = REPO_ROOT / models
    raw = env.get("JITWARM_SHAPE_TIMEOUT_S") or table.get("shape_timeout_s", 1800)
    try:
        timeout = float(raw)
    except (TypeError, ValueError):
        timeout = 0.0
    if timeout <= 0:
        raise SystemExit(f"jitwarm: shape timeout: expected a positive number of seconds, got {raw!r}")
    raw_jobs = env.get("JITWARM_JOBS") or table.get("jobs", 0)
    try:
        jobs = int(raw_jobs)
    except (TypeError, ValueError):
        jobs = -1
    if jobs < 0:
        raise SystemExit(f"jitwarm: jobs: expected a number of workers (0 = all cores), got {raw_jobs!r}")
    return Settings(models, timeout, jobs, _output(env, table, "JITWARM_JUNIT_XML", "junit_xml"),
                    _output(env, table, "JITWARM_REPORT_JSON", "report_json"))


def _output(env, table: dict, env_name: str, key: str) -> Path | None:
    """A report path: the environment's is relative to the working directory, pyproject's to the repo."""
    if value := env.get(env_name):
        return Path(value).absolute()
    value = table.get(key) or ""
    if not isinstance(value, str):
        raise SystemExit(f"jitwarm: pyproject.toml: tool.jitwarm.{key}: expected a path, got {value!r}")
    return (REPO_ROOT / value) if value else None
