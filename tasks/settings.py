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
    return Settings(models, timeout, jobs)
