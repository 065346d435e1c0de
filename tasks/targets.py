"""Expand the registry into warm targets and the content-keyed shape work they share. Pure."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import mlists, planner, registry
from .planner import GemmShape, Kind


@dataclass(frozen=True)
class ShapeWork:
    """One shape over one M list: the unit of compile work, shared by content."""

    shape: GemmShape
    m_values: tuple[int, ...]

    @functools.cached_property
    def key(self) -> str:
        m_digest = hashlib.sha256(json.dumps(self.m_values).encode()).hexdigest()
        blob = json.dumps([self.shape.kind.value, self.shape.n, self.shape.k, self.shape.groups, m_digest])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.shape.label}-{self.key[:8]}"

    def describe(self) -> dict:
        return {"key": self.key, "kind": self.shape.kind.value, "n": self.shape.n, "k": self.shape.k,
                "groups": self.shape.groups, "m_count": len(self.m_values),
                "m_min": self.m_values[0] if self.m_values else None,
                "m_max": self.m_values[-1] if self.m_values else None}


@dataclass
class Target:
    name: str
    model: str
    source: Path
    hf_id: str | None = None
    tp: int | None = None
    launch_index: int | None = None
    args: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    launch_hash: str = ""
    m_policy: mlists.MListPolicy | None = None
    plan: planner.Plan | None = None
    works: list[ShapeWork] = field(default_factory=list)
    error: str | None = None  # one line; the target fails with it

    @property
    def plan_hash(self) -> str:
        blob = json.dumps(sorted(w.key for w in self.works))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def doc(self) -> str:
        if self.error:
            return f"FAILS: {self.error}"
        args = " ".join(self.args)
        return f"{self.hf_id} tp{self.tp}{' ' + args if args else ''}: {len(self.works)} shapes, planned"


def expand(specs, environ=None) -> list[Target]:
    env = os.environ if environ is None else environ
    out: list[Target] = []
    for spec in specs:
        if isinstance(spec, registry.RegistryError):
            out.append(Target(f"{spec.name}@invalid", spec.name, spec.path, error=spec.message))
            continue
        config, config_error = _config(spec)
        for launch in spec.launches:
            out.append(_target(spec, launch, config, config_error, env))
    return out


def _target(spec, launch, config, config_error, env) -> Target:
    target = Target(
        name=f"{spec.name}@tp{launch.tp}-{launch.hash[:8]}", model=spec.name, source=spec.path,
        hf_id=spec.hf_id, tp=launch.tp, launch_index=launch.index, args=launch.args, tags=launch.tags,
        launch_hash=launch.hash)
    if config_error:
        target.error = config_error
        return target
    plan_env = {k: env.get(k) for k in registry.PLAN_ENV_KEYS if env.get(k) is not None}
    plan_env.update(launch.env)
    try:
        fast = registry.env_bool(plan_env.get("SGLANG_JIT_DEEPGEMM_FAST_WARMUP", "0"))
        bmm = registry.env_bool(plan_env.get("SGLANG_USE_DEEPGEMM_BMM", "0"))
        enabled = registry.env_bool(plan_env.get("SGLANG_ENABLE_JIT_DEEPGEMM", "1"))
    except ValueError as exc:
        target.error = f"{registry.display_path(spec.path)}: environment: {exc}"
        return target
    target.m_policy = mlists.policy(launch.flags, fast, launch.m_list)
    if not enabled:
        target.plan = planner.Plan()  # the server runs no DeepGEMM kernel at all
        return target
    try:
        target.plan = planner.plan(config, launch.flags, use_deepgemm_bmm=bmm)
    except planner.PlanError as exc:
        where = f"config.{exc.field}: " if exc.field else ""
        target.error = f"{registry.display_path(spec.path)}: {where}{exc}"
        return target
    values = target.m_policy.values()
    for shape in target.plan.shapes:
        m_values = mlists.for_kind(shape.kind is Kind.CONTIG, values)
        if m_values:
            target.works.append(ShapeWork(shape, tuple(m_values)))
    return target


def _config(spec) -> tuple[dict | None, str | None]:
    if spec.config_source == "embedded":
        return spec.config, None
    # Offline lookup in the local Hugging Face cache; never touches the network.
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hf_id, "config.json", revision=spec.revision)
    if not isinstance(found, str):
        return None, (f"{registry.display_path(spec.path)}: config_source: config.json for {spec.hf_id} is not in the "
                      f"local Hugging Face cache; download it or embed [config]")
    try:
        return json.loads(Path(found).read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"{registry.display_path(spec.path)}: config_source: cannot read {found}: {exc}"


def shared_works(targets: list[Target]) -> dict[str, ShapeWork]:
    """Every distinct shape work across targets, by content key."""
    works: dict[str, ShapeWork] = {}
    for target in targets:
        for work in target.works:
            works.setdefault(work.key, work)
    return works
