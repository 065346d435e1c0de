"""Project settings: [tool.jitwarm] in pyproject.toml, overridable by environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import msgspec

REPO_ROOT = Path(__file__).resolve().parents[2]
REMOTE_MODES = ("read", "read-write", "off")
# How a pulled shape is accepted: "manifest" trusts a pusher's replay proof once every file
# matches its sha256 (no GPU pass); "replay" replays every pulled shape here as well.
VERIFY_MODES = ("manifest", "replay")


class RemoteConfig(msgspec.Struct, frozen=True):
    url: str
    mode: str = "read"
    timeout_s: float = 60.0
    verify: str = "manifest"

    @property
    def writable(self) -> bool:
        return self.mode == "read-write"

    def __str__(self) -> str:
        return f"{display_url(self.url)} ({self.mode})"


def display_url(url: str) -> str:
    """The URL without a query string (where some stores put signed tokens)."""
    return url.split("?", 1)[0]


def config_error(url: str) -> str | None:
    """Why a remote URL is refused, without echoing it (it might hold a secret)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        return "expected an fsspec URL such as s3://bucket/prefix or file:///mnt/shared/jitwarm"
    if "@" in rest.split("/", 1)[0]:
        return ("credentials in the URL are not accepted; give them in the environment "
                "(e.g. AWS_ACCESS_KEY_ID) or the provider's standard chain")
    return None


class _Table(msgspec.Struct, forbid_unknown_fields=True):
    """[tool.jitwarm] as written: every key typed, a misspelt one refused (not silently a default)."""

    models_dir: str = "models"
    shape_timeout_s: float = 1800
    jobs: int = 0
    junit_xml: str = ""
    report_json: str = ""
    watch_junit_xml: str = ""
    watch_report_json: str = ""
    remote: str = ""
    remote_mode: str = "read"
    remote_timeout_s: float = 60
    verify: str = "manifest"


# Environment variables that take one word, and the words they take (their default first).
ENV_WORDS = {
    "JITWARM_PROGRESS": ("auto", "plain", "live"),  # tasks/report/progress.py
    "JITWARM_NOOP_STAMP": ("on", "off"),  # tasks/cli/noop.py
    "JITWARM_KERNEL_QUEUE": ("on", "off"),  # tasks/runner/kernel_queue.py
    "JITWARM_STAND_IN_GPU": ("none", "present"),  # tasks/runner/batch.py: the stand-ins without a GPU
    "JITWARM_VERIFY": VERIFY_MODES,
    "JITWARM_REMOTE_MODE": REMOTE_MODES,
}


def _check_table(table) -> None:
    try:
        msgspec.convert(table, _Table)
    except msgspec.ValidationError as exc:
        message = str(exc)
        unknown = message.partition("unknown field `")[2].partition("`")[0]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown, _Table.__struct_fields__, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(_Table.__struct_fields__)}"
            raise SystemExit(f"jitwarm: pyproject.toml: tool.jitwarm.{unknown}: unknown key{hint}") from None
        where = message.rpartition(" - at `$.")[2].rstrip("`")
        raise SystemExit(f"jitwarm: pyproject.toml: tool.jitwarm.{where}: {message.partition(' - at ')[0]}") from None


def _check_words(env) -> None:
    for name, words in ENV_WORDS.items():
        value = env.get(name)
        if value and value not in words:
            raise SystemExit(f"jitwarm: {name}: expected one of {', '.join(words)}, got {value!r}")


class Settings(msgspec.Struct, frozen=True):
    models_dir: Path
    shape_timeout_s: float
    jobs: int = 0  # compile workers at most; 0 = every usable core
    junit_xml: Path | None = None  # where `doit warm` writes JUnit XML; None = nowhere
    report_json: Path | None = None  # where it writes the JSON report (docs/report.schema.json)
    remote: RemoteConfig | None = None  # the shared remote cache; None = off
    watch_junit_xml: Path | None = None  # where `doit watch` writes its JUnit XML
    watch_report_json: Path | None = None  # where it writes its JSON report (docs/watch-report.schema.json)


def load(environ=None) -> Settings:
    env = os.environ if environ is None else environ
    try:
        with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
            table = tomllib.load(fh).get("tool", {}).get("jitwarm", {})
    except (OSError, tomllib.TOMLDecodeError):
        table = {}
    _check_table(table)
    _check_words(env)
    models = Path(env.get("JITWARM_MODELS_DIR") or table.get("models_dir", "models"))
    if not models.is_absolute():
        models = REPO_ROOT / models
    timeout = _positive_seconds(env.get("JITWARM_SHAPE_TIMEOUT_S") or table.get("shape_timeout_s", 1800),
                                "shape timeout")
    raw_jobs = env.get("JITWARM_JOBS") or table.get("jobs", 0)
    try:
        jobs = int(raw_jobs)
    except (TypeError, ValueError):
        jobs = -1
    if jobs < 0:
        raise SystemExit(f"jitwarm: jobs: expected a number of workers (0 = all cores), got {raw_jobs!r}")
    for name in ("JITWARM_GPU_MARGIN_GIB", "JITWARM_KILL_GRACE_S"):  # read deep in the runner: checked here
        if env.get(name) is not None:
            _non_negative(env[name], name)
    return Settings(models, timeout, jobs, _output(env, table, "JITWARM_JUNIT_XML", "junit_xml"),
                    _output(env, table, "JITWARM_REPORT_JSON", "report_json"), _remote(env, table),
                    watch_junit_xml=_output(env, table, "JITWARM_WATCH_JUNIT_XML", "watch_junit_xml"),
                    watch_report_json=_output(env, table, "JITWARM_WATCH_REPORT_JSON", "watch_report_json"))


def _non_negative(raw, name: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise SystemExit(f"jitwarm: {name}: expected a non-negative number, got {raw!r}")
    return value


def _positive_seconds(raw, where: str) -> float:
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds <= 0:
        raise SystemExit(f"jitwarm: {where}: expected a positive number of seconds, got {raw!r}")
    return seconds


def _remote(env, table: dict) -> RemoteConfig | None:
    """[tool.jitwarm] remote / remote_mode / remote_timeout_s, or JITWARM_REMOTE{,_MODE,_TIMEOUT_S}."""
    def pick(env_name: str, key: str, default):
        if env.get(env_name):
            return env[env_name], env_name
        return table.get(key, default), f"pyproject.toml: tool.jitwarm.{key}"

    url, where = pick("JITWARM_REMOTE", "remote", "")
    if not isinstance(url, str):
        raise SystemExit(f"jitwarm: {where}: expected a URL string, got a {type(url).__name__}")
    mode, mode_where = pick("JITWARM_REMOTE_MODE", "remote_mode", "read")
    if mode not in REMOTE_MODES:
        raise SystemExit(f"jitwarm: {mode_where}: expected one of {', '.join(REMOTE_MODES)}, got {mode!r}")
    timeout = _positive_seconds(*pick("JITWARM_REMOTE_TIMEOUT_S", "remote_timeout_s", 60))
    verify, verify_where = pick("JITWARM_VERIFY", "verify", "manifest")
    if verify not in VERIFY_MODES:
        raise SystemExit(f"jitwarm: {verify_where}: expected one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    if not url or mode == "off":
        return None
    if problem := config_error(url):
        raise SystemExit(f"jitwarm: {where}: {problem}")
    return RemoteConfig(url, mode, timeout, verify)


def _output(env, table: dict, env_name: str, key: str) -> Path | None:
    """A report path: the environment's is relative to the working directory, pyproject's to the repo."""
    if value := env.get(env_name):
        return Path(value).absolute()
    value = table.get(key) or ""
    if not isinstance(value, str):
        raise SystemExit(f"jitwarm: pyproject.toml: tool.jitwarm.{key}: expected a path, got {value!r}")
    return (REPO_ROOT / value) if value else None
