"""Expand the registry into warm targets and the content-keyed shape work they share. Pure.

Each target takes one path:
  planned   the planner derives its shapes from config.json and the launch args;
  locked    a shape lock captured from a real server run supplies them;
  fallback  nothing does yet: the server itself (sglang.compile_deep_gemm) is run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import msgspec

from tasks.plan import locks, mlists, planner, registry
from tasks.plan.planner import GemmShape, Kind

PLANNED, LOCKED, FALLBACK = "planned", "locked", "fallback"


class ShapeWork(msgspec.Struct, frozen=True, dict=True):
    """One shape over one M list: the unit of compile work, shared by content."""

    shape: GemmShape
    m_values: tuple[int, ...]

    @functools.cached_property
    def key(self) -> str:
        blob = json.dumps([self.shape.kind.value, self.shape.n, self.shape.k, self.shape.groups,
                           _m_digest(self.m_values)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.shape.label}-{self.key[:8]}"

    def describe(self) -> dict:
        return {"key": self.key, "kind": self.shape.kind.value, "n": self.shape.n, "k": self.shape.k,
                "groups": self.shape.groups, "m_count": len(self.m_values),
                "m_min": self.m_values[0] if self.m_values else None,
                "m_max": self.m_values[-1] if self.m_values else None}


_DIGESTS: dict[int, tuple[tuple[int, ...], str]] = {}


def _m_digest(m_values: tuple[int, ...]) -> str:
    # Many shapes share one M list object (up to 131072 values): digest each once, found by
    # identity, since hashing or comparing the tuple itself costs as much as a scan.
    hit = _DIGESTS.get(id(m_values))
    if hit is not None and hit[0] is m_values:
        return hit[1]
    digest = hashlib.sha256(json.dumps(m_values).encode()).hexdigest()
    _DIGESTS[id(m_values)] = (m_values, digest)  # holding the tuple keeps its id unique
    return digest


def plan_hash(works, unsupported: tuple[str, ...] = ()) -> str:
    keys = sorted(w.key for w in works)
    return hashlib.sha256(json.dumps([keys, sorted(unsupported)] if unsupported else keys).encode()).hexdigest()


class Target(msgspec.Struct):
    name: str
    model: str
    source: Path
    hf_id: str | None = None
    tp: int | None = None
    launch_index: int | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)  # the launch's own env: the server runs with it
    tags: tuple[str, ...] = ()
    launch_hash: str = ""
    m_policy: mlists.MListPolicy | None = None
    plan: planner.Plan | None = None
    works: list[ShapeWork] = msgspec.field(default_factory=list)
    error: str | None = None  # one line; the target fails with it
    path: str = PLANNED
    fallback_reason: str | None = None
    fallback_timeout_s: int = 1800
    lock: locks.Capture | None = None
    lock_note: str | None = None  # why a lock on disk was not used
    watch_note: str | None = None  # why shapes `doit watch` recorded were not used
    unsupported: tuple[str, ...] = ()  # locked shapes of kernel types jitwarm cannot run

    @property
    def plan_hash(self) -> str | None:
        """None for fallback targets: their shapes are unknown until the server reports them."""
        return None if self.path == FALLBACK else plan_hash(self.works, self.unsupported)

    @property
    def unsupported_line(self) -> str:
        """One line: what this target's lock needs that jitwarm cannot warm."""
        kinds = ", ".join(sorted({text.split()[0] for text in self.unsupported}))
        return (f"no executor in jitwarm for kernel type {kinds}: {len(self.unsupported)} captured shape(s) "
                f"left cold, e.g. {self.unsupported[0]}; the server will JIT-compile them at start (delete "
                f"launch[{self.launch_index}]'s [[capture]] in {locks.path_for(self.source).name} to warm this "
                f"target through the server instead)")

    @property
    def doc(self) -> str:
        if self.error:
            return f"FAILS: {self.error}"
        import shlex  # as pasted into a shell: launch args may hold spaces or metacharacters

        args = shlex.join(self.args)
        head = f"{self.hf_id} tp{self.tp}{' ' + args if args else ''}"
        if self.path == FALLBACK:
            return f"{head}: fallback via sglang.compile_deep_gemm ({self.fallback_reason})"
        cold = f", {len(self.unsupported)} of a kernel type jitwarm cannot run" if self.unsupported else ""
        return f"{head}: {len(self.works)} shapes, {self.path}{cold}"


class Facts(msgspec.Struct, frozen=True):
    """What planning needs from the machine, read by the caller (tasks/host); the default
    knows nothing: no sglang or deep_gemm installed, an empty Hugging Face cache."""

    versions: dict = msgspec.field(default_factory=lambda: {"sglang": None, "deep_gemm": None})
    # (repo id, file name, revision) -> the file in the local Hugging Face cache, or None
    cached_file: Callable[[str, str, str | None], Path | None] = lambda repo, name, revision: None
    gpu_memory_mib: int | None = None  # the first visible GPU's memory: sglang's chunked prefill default


def expand(specs, environ=None, facts: Facts = Facts()) -> list[Target]:
    env = os.environ if environ is None else environ
    out: list[Target] = []
    for spec in specs:
        if isinstance(spec, registry.RegistryError):
            out.append(Target(f"{spec.name}@invalid", spec.name, spec.path, error=spec.message))
            continue
        config, config_error, config_missing = _config(spec, facts.cached_file)
        try:
            (captures, watched), lock_error = locks.read_all(spec.path), None
        except locks.LockError as exc:
            captures, watched, lock_error = {}, {}, str(exc)
        for launch in spec.launches:
            target = Target(
                name=f"{spec.name}@tp{launch.tp}-{launch.hash[:8]}", model=spec.name, source=spec.path,
                hf_id=spec.hf_id, tp=launch.tp, launch_index=launch.index, args=launch.args,
                env=dict(launch.env), tags=launch.tags, launch_hash=launch.hash, fallback_timeout_s=launch.fallback_timeout_s)
            _choose_path(target, spec, launch, config, config_error, config_missing,
                         captures.get(launch.index), lock_error, env, facts)
            if target.plan is not None and target.path != FALLBACK and not target.error:
                _add_watched(target, watched.get(launch.index))
                target.works = works_for(target.plan, target.m_policy)
            out.append(target)
    return out


def _choose_path(target, spec, launch, config, config_error, config_missing, capture, lock_error, env, facts):
    plan_env = {k: env.get(k) for k in registry.PLAN_ENV_KEYS if env.get(k) is not None}
    plan_env.update(launch.env)
    try:
        fast = registry.env_bool(plan_env.get("SGLANG_JIT_DEEPGEMM_FAST_WARMUP", "0"))
        enabled = registry.env_bool(plan_env.get("SGLANG_ENABLE_JIT_DEEPGEMM", "1"))
        server_env = planner.PlanEnv(
            use_deepgemm_bmm=registry.env_bool(plan_env.get("SGLANG_USE_DEEPGEMM_BMM", "0")),
            shared_expert_tp1=registry.env_bool(plan_env.get("SGLANG_SHARED_EXPERT_TP1", "0")),
            disable_dsa_indexer_fusion=registry.env_bool(plan_env.get("SGLANG_DISABLE_DSA_INDEXER_FUSION", "0")),
            bf16_fp32_gemm_algo=plan_env.get("SGLANG_OPT_BF16_FP32_GEMM_ALGO", "cublas"),
            fp8_paged_mqa_logits_torch=registry.env_bool(plan_env.get("SGLANG_FP8_PAGED_MQA_LOGITS_TORCH", "0")),
            deepgemm_standard_layout=registry.env_choice(plan_env, "SGLANG_DEEPGEMM_STANDARD_LAYOUT", "auto"))
    except ValueError as exc:
        target.error = f"{registry.display_path(spec.path)}: environment: {exc}"
        return
    target.m_policy = mlists.policy(launch.flags, fast, launch.m_list, facts.gpu_memory_mib)
    if not enabled:
        target.plan = planner.Plan()  # the server runs no DeepGEMM kernel at all
        return

    needs_fallback = launch.path == "fallback"
    reason = "the launch tuple asks for it" if needs_fallback else None
    if not needs_fallback and config_error:
        if not config_missing:
            target.error = config_error
            return
        needs_fallback, reason = True, f"config.json for {spec.hf_id} is not in the local Hugging Face cache"
    if not needs_fallback:
        try:
            target.plan = planner.plan(config, launch.flags, server_env, facts.gpu_memory_mib)
        except planner.PlanError as exc:
            if not exc.needs_fallback:
                where = f"config.{exc.field}: " if exc.field else ""
                target.error = f"{registry.display_path(spec.path)}: {where}{exc}"
                return
            needs_fallback, reason = True, str(exc)
    if needs_fallback:
        target.lock_note = lock_error or _unusable(capture, launch, facts.versions)
        if capture is not None and target.lock_note is None:
            target.path, target.lock = LOCKED, capture
            target.plan, target.unsupported = locked_plan(capture.shapes)
        else:
            target.path, target.fallback_reason = FALLBACK, reason
            return


WATCHED_USE = "recorded by doit watch"  # how `doit plan` tells a watched shape from a planned one


def _add_watched(target: Target, watched: locks.Watched | None) -> None:
    """Add the shapes a watched run compiled for this launch tuple to its plan."""
    if watched is None or target.plan is None:
        return
    if watched.launch_hash != target.launch_hash:
        target.watch_note = (f"shapes `doit watch` recorded for launch[{watched.launch}] came from other launch "
                             f"args ({watched.launch_hash[:8]}, now {target.launch_hash[:8]}); ignored")
        return
    known = {k.value for k in Kind}
    for kind, n, k, groups in watched.shapes:
        if kind in known:
            target.plan.add(GemmShape(Kind(kind), n, k, groups),
                            f"{WATCHED_USE} at {watched.recorded_at}: {watched.command}")


FALLBACK_MODULE = "sglang.compile_deep_gemm"
# Test seam: tests point this at a stand-in script module; production leaves it unset.
FALLBACK_MODULE_ENV = "JITWARM_COMPILE_MODULE"


def fallback_module(environ=None) -> str:
    env = os.environ if environ is None else environ
    return env.get(FALLBACK_MODULE_ENV) or FALLBACK_MODULE


def fallback_command(target: Target, python: str) -> list[str]:
    """The server run that warms a fallback target: an argv list, never a shell string."""
    argv = [python, "-m", fallback_module(), "--model-path", target.hf_id]
    if not any(a.split("=", 1)[0] in ("--tp", "--tp-size", "--tensor-parallel-size") for a in target.args):
        argv += ["--tp", str(target.tp)]
    return argv + list(target.args)


def works_for(plan: planner.Plan, policy: mlists.MListPolicy) -> list[ShapeWork]:
    values, contig = _values(policy)
    works = []
    for shape in plan.shapes:
        m_values = plan.calls.get(shape) or (_INDEXER_CALLS if shape.kind.indexer else
                                             contig if shape.kind.contiguous else values)
        if m_values:
            works.append(_work(shape, m_values))
    return works


# An indexer shape known only from a lock or `doit watch` (not planned from the config): its
# kernel, at one row; the decode schedule's row counts come from the planner alone.
_INDEXER_CALLS = (1,)
_WORKS: dict[tuple[GemmShape, int], ShapeWork] = {}


def _work(shape: GemmShape, m_values: tuple[int, ...]) -> ShapeWork:
    """One ShapeWork per (shape, M list object): targets that share a shape share its key's hashing."""
    found = _WORKS.get((shape, id(m_values)))
    if found is None or found.m_values is not m_values:
        found = _WORKS[(shape, id(m_values))] = ShapeWork(shape, m_values)
    return found


@functools.lru_cache(maxsize=32)
def _values(policy: mlists.MListPolicy) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(every M, the CONTIG kinds' M): targets with the same policy share both tuples (up to
    131072 values), built and filtered once."""
    values = tuple(policy.values())
    return values, tuple(mlists.for_kind(True, values))


def locked_plan(shapes) -> tuple[planner.Plan, tuple[str, ...]]:
    """The plan of the captured shapes jitwarm can run, and the text of those it cannot
    (sglang 0.5.23's BLOCK32, BF16 and BF16BF16F32 types have no executor here yet)."""
    plan, unsupported = planner.Plan(), []
    known = {k.value for k in Kind}
    for kind, n, k, groups in shapes:
        if kind in known:
            plan.add(GemmShape(Kind(kind), n, k, groups), "captured from sglang")
        else:
            unsupported.append(locks.shape_text((kind, n, k, groups)))
    return plan, tuple(unsupported)


def _unusable(capture: locks.Capture | None, launch, versions: dict) -> str | None:
    if capture is None:
        return None
    if capture.launch_hash != launch.hash:
        return (f"lock for launch[{launch.index}] was captured for other launch args "
                f"({capture.launch_hash[:8]}, now {launch.hash[:8]}); ignored")
    if not capture.shapes and (capture.sglang, capture.deep_gemm) != (versions["sglang"], versions["deep_gemm"]):
        # "Uses no DeepGEMM kernel" holds only for the toolchain that said so.
        return (f"empty lock was captured with sglang {capture.sglang}, {capture.deep_gemm}; "
                f"now sglang {versions['sglang']}, {versions['deep_gemm']}; ignored")
    return None


def _config(spec, cached_file) -> tuple[dict | None, str | None, bool]:
    """(config, error, missing): `missing` means not available here, not broken."""
    if spec.config_source == "embedded":
        return spec.config, None, False
    # Offline lookup in the local Hugging Face cache; never touches the network.
    found = cached_file(spec.hf_id, "config.json", spec.revision)
    if found is None:
        return None, (f"{registry.display_path(spec.path)}: config_source: config.json for {spec.hf_id} "
                      f"is not in the local Hugging Face cache; download it or embed [config]"), True
    try:
        return json.loads(Path(found).read_text(encoding="utf-8")), None, False
    except (OSError, ValueError) as exc:
        return None, f"{registry.display_path(spec.path)}: config_source: cannot read {found}: {exc}", False


def shared_works(targets: list[Target]) -> dict[str, ShapeWork]:
    """Every distinct shape work across targets, by content key."""
    works: dict[str, ShapeWork] = {}
    for target in targets:
        for work in target.works:
            works.setdefault(work.key, work)
    return works
