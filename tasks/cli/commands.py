"""doit commands registered in pyproject.toml ([tool.doit.plugins.command]):

  doit stale [TARGET...]  stale targets with their reasons; exit 1 if any (a CI gate)
  doit plan [TARGET...]   each target's path, shapes, M list and estimated compile cost;
                          --explain adds the rules that decided each shape, and what is not covered
  doit push [TARGET...]   upload the warm shapes the remote cache lacks (read-write mode)
  doit env [TARGET...]    the environment a server should start with (for `eval`)

They need no GPU, torch or deep_gemm. A TARGET is a target name (with or without
`warm:`), a model name, meaning all its targets, or a wildcard over either ('warm:deepseek*').
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import sys

from doit.cmd_base import Command

from tasks.plan import estimate, sharding, targets
from tasks.plan.gemms import Kind
from tasks.plan.text import plural

EXIT_STALE, EXIT_USAGE = 1, 3  # a usage error exits 3, as doit's own do
# sglang#27604's per-process cache subdirectories; RL stacks set it with the start-up sweep off.
PER_PROCESS_ENV = "SGLANG_DG_CACHE_DIR_PER_PROCESS"

_opt_shard = {
    "name": "shard", "long": "shard", "type": str, "default": "",
    "help": "only shard i of N (i/N, 1-based), as `doit warm --shard`; default: JITWARM_SHARD",
}


def select_targets(shard_option: str | None, names: list[str]):
    """((session, selection, targets named, all targets), None), or (None, a usage error line).
    `shard_option` None: every target, whatever JITWARM_SHARD says."""
    from tasks.cli import doit_tasks

    session, all_targets = doit_tasks.load()
    try:
        shard = None if shard_option is None else sharding.from_settings(shard_option, os.environ)
        chosen = sharding.select(all_targets, shard)
    except sharding.ShardError as exc:
        return None, str(exc)
    if not names:
        return (session, chosen, chosen.targets, all_targets), None
    picked, known = [], {t.name for t in all_targets} | {t.model for t in all_targets}
    for raw in names:
        name = raw.removeprefix("warm:")
        # A wildcard, as `doit warm 'warm:deepseek*'` takes; without one, fnmatch is equality.
        if any(c in name for c in "*?["):
            if not fnmatch.filter(known, name):
                return None, f"no target matches {raw!r}; `doit list` shows the targets"
        elif name not in known:
            return None, f"unknown target {raw!r}; `doit list` shows the targets"
        picked += [t for t in chosen.targets if t not in picked
                   and (fnmatch.fnmatchcase(t.name, name) or fnmatch.fnmatchcase(t.model, name))]
    return (session, chosen, picked, all_targets), None


_opt_explain = {
    "name": "explain", "long": "explain", "type": bool, "default": False,
    "help": "under each shape, the layers and sglang rules that put it there; then what the planner kept "
            "off DeepGEMM and what the server compiles that the plan does not cover",
}


class _TargetCommand(Command):
    """Selects targets from the arguments and --shard (where the command has that option), then
    runs `report` on them."""

    cmd_options = (_opt_shard,)

    def execute(self, params, args):
        found, problem = select_targets(params.get("shard"), args)
        if problem:
            print(f"jitwarm: {problem}", file=sys.stderr)
            return EXIT_USAGE
        self.params = params
        return self.report(*found)

    def report(self, session, chosen, picked, all_targets) -> int:
        raise NotImplementedError


class Stale(_TargetCommand):
    name = "stale"
    doc_purpose = "list stale warm targets with their reasons; exit 1 if any is stale"
    doc_usage = "[TARGET ...]"
    doc_description = "A CI gate: exit 0 when every (selected) target is up to date, 1 otherwise."

    def report(self, session, chosen, picked, all_targets) -> int:
        from tasks.cli import doit_tasks

        stale = 0
        for target in picked:
            check = doit_tasks.TargetCheck(session, target, chosen.local_keys[target.name])
            if not check(None, None):
                stale += 1
                print(f"stale {target.name}: {check}")
        where = f" of shard {chosen.shard}" if chosen.shard else ""
        print(f"{stale} of {plural(len(picked), 'target')}{where} stale (cache {session.root})")
        return EXIT_STALE if stale else 0


class Plan(_TargetCommand):
    name = "plan"
    doc_purpose = "show each target's warm plan: path, shapes, M list, estimated kernels and compile time"
    doc_usage = "[TARGET ...]"
    doc_description = ("Estimates are calibrated on sgl-deep-gemm 0.1.2 warms (tasks/plan/estimate.py); where a "
                       "warm already ran, each shape shows the cache entries it used instead.")
    cmd_options = (_opt_shard, _opt_explain)

    def report(self, session, chosen, picked, all_targets) -> int:
        invalid = 0
        used = warmed_entries(session, picked)
        for target in picked:
            print("\n".join(describe(target, all_targets, chosen.local_keys[target.name], self.params["explain"],
                                      used)))
            invalid += bool(target.error)
        unique = {w.key: w for t in picked for w in t.works  # a shard's totals count only its shapes
                  if chosen.local_keys[t.name] is None or w.key in chosen.local_keys[t.name]}
        total = estimate.ZERO
        for work in unique.values():
            total = total + estimate.shape_cost(work)
        fallbacks = [t for t in picked if t.path == targets.FALLBACK and not t.error]
        guess = ""
        if fallbacks:
            each = estimate.fallback_cost(all_targets).nvcc_s
            guess = f" + {plural(len(fallbacks), 'fallback target')}, ~{each * len(fallbacks):.0f}s guessed"
        print(f"total: {plural(len(picked), 'target')}, {len(unique)} distinct shapes, ~{plural(total.kernels, 'kernel')}, "
              f"~{total.nvcc_s:.0f}s of nvcc on one core{guess}{f' (shard {chosen.shard})' if chosen.shard else ''}")
        return 1 if invalid else 0


class Push(_TargetCommand):
    name = "push"
    doc_purpose = "upload the selected targets' warm shapes that the remote cache lacks"
    doc_usage = "[TARGET ...]"
    doc_description = ("Seeds the remote cache from a cache root warmed earlier (a `doit warm` in read-write "
                       "mode pushes what it compiles by itself). Needs remote_mode = read-write. "
                       "Exit 1 if an upload failed.")

    def report(self, session, chosen, picked, all_targets) -> int:
        from tasks.remote import sync

        remote = sync.for_settings(session.settings)
        if remote is None or not remote.config.writable:
            print("jitwarm: doit push needs a remote cache in read-write mode "
                  "(remote / JITWARM_REMOTE and remote_mode / JITWARM_REMOTE_MODE)", file=sys.stderr)
            return EXIT_USAGE
        root, fp = session.root.path, session.fingerprint
        works = [w for t in picked for w in t.works
                 if chosen.local_keys[t.name] is None or w.key in chosen.local_keys[t.name]]
        unique = list({w.key: w for w in works}.values())
        items = sync.warm_shapes(session.root, unique, fp)
        print(f"{len(items)} of {len(unique)} shapes are warm in {session.root}")
        scratch = root / "tmp" / f"jitwarm-push-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            outcomes = sync.push(remote, items, session.root, fp, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return 1 if any(o.status == "error" for o in outcomes.values()) else 0


class Env(_TargetCommand):
    name = "env"
    doc_purpose = "print the environment a server should start with: cache roots, and no start-up sweep when proven"
    doc_usage = "[TARGET ...]"
    doc_description = (
        "Prints `export` lines for eval: the cache root variables, and SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 only "
        "when every selected target (default: all) is proven warm for this machine's fingerprint; otherwise "
        "that line is left out and stderr says why. Ignores --shard: a server needs its whole target.")
    cmd_options = ()

    def report(self, session, chosen, picked, all_targets) -> int:
        variables, unproven = server_env(session, picked)
        if os.environ.get(PER_PROCESS_ENV) not in (None, "", "0", "false"):
            print(f"jitwarm: {PER_PROCESS_ENV} is set, but sglang 0.5.23 does not read it: it points deep_gemm at "
                  "SGLANG_DG_CACHE_DIR alone (layers/deep_gemm_wrapper/compile_utils.py:51), so its servers read "
                  "the warmed root below", file=sys.stderr)
        for why in unproven:
            print(f"jitwarm: SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 left out: {why}", file=sys.stderr)
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in variables.items()))
        return 0


def cache_env(root) -> dict[str, str]:
    """The cache root variables: sglang reads SGLANG_DG_CACHE_DIR and hands it to deep_gemm;
    deep_gemm alone reads its own."""
    return dict.fromkeys(("SGLANG_DG_CACHE_DIR", *root.layout.cache_dir_env[:1]), root.env_value())


def server_env(session, picked) -> tuple[dict[str, str], list[str]]:
    """The variables a server of `picked` should start with, and why the start-up sweep
    cannot be skipped (empty when SGLANG_JIT_DEEPGEMM_PRECOMPILE=0 is among the variables)."""
    from tasks.cli import doit_tasks

    variables, unproven = cache_env(session.root), []
    for target in picked:
        check = doit_tasks.TargetCheck(session, target)
        if not check(None, None):
            unproven.append(f"{target.name}: {check}")
        elif target.plan and target.plan.not_covered:
            # Warm, but a start still compiles these: PRECOMPILE=0 is only given where a start compiles nothing.
            unproven.append(f"{target.name}: not warmed: {target.plan.not_covered[0]}"
                            + (f" (and {len(target.plan.not_covered) - 1} more: doit plan)"
                               if len(target.plan.not_covered) > 1 else ""))
    if not picked:
        unproven.append("the registry has no target")
    if not unproven:
        variables["SGLANG_JIT_DEEPGEMM_PRECOMPILE"] = "0"
    return variables, unproven


def warmed_entries(session, picked) -> dict[str, set[str]]:
    """Shape key -> the cache entries its last successful warm used (on whichever toolchain: a
    plan does not compute the fingerprint, and `doit stale` says when that changed)."""
    from tasks.state import records

    used = {}
    for work in targets.shared_works(picked).values():
        record, _ = records.read_shape(session.root.path, work.key)
        if record is not None and record.ok:
            used[work.key] = set(record.entries)
    return used


def describe(target: targets.Target, all_targets: list[targets.Target], local_keys=None,
             explain: bool = False, used: dict[str, set[str]] | None = None) -> list[str]:
    if target.error:
        return [f"warm:{target.name}", f"  FAILS: {target.error}"]
    lines = [f"warm:{target.name}", f"  path: {target.path}",
             f"  {target.hf_id} tp{target.tp} {shlex.join(target.args)}".rstrip()]
    if target.path == targets.FALLBACK:
        cost = estimate.fallback_cost(all_targets)
        lines += [f"  shapes: unknown until the server reports them ({target.fallback_reason})",
                  f"  runs: {shlex.join(targets.fallback_command(target, 'python'))}",
                  f"  estimate: ~{cost.kernels} kernels, ~{cost.nvcc_s:.0f}s of nvcc (a guess: the median "
                  f"planned target), at most {target.fallback_timeout_s}s"]
        return lines
    policy = target.m_policy
    m_count = next((len(w.m_values) for w in target.works if not w.shape.kind.indexer), 0)
    lines.append(f"  M list: {policy.describe() if policy else '-'}, {m_count} values")
    lines.append(f"  shapes: {len(target.works)}")
    for work in target.works:
        cost = estimate.shape_cost(work)
        here = "" if local_keys is None or work.key in local_keys else "  (another shard)"
        uses = target.plan.uses.get(work.shape, []) if target.plan else []
        if uses and all(use.startswith(targets.WATCHED_USE) for use in uses):
            here += "  (from doit watch)"
        calls = "rows" if work.shape.kind is Kind.PAGED_MQA_LOGITS else "lengths" if work.shape.kind.indexer else "M"
        built = (used or {}).get(work.key)
        kernels = f"{len(built)} entries at its last warm" if built is not None else \
            f"~{cost.kernels} kernels  ~{cost.nvcc_s:.0f}s"
        lines.append(f"    {work.name}  {work.shape.kind.value} {work.shape.params}  {calls}={len(work.m_values)}  "
                     f"{kernels}{here}")
        if explain and target.plan and work.shape in target.plan.uses:
            lines += [f"      why: {use}" for use in target.plan.uses[work.shape]]
    if explain and target.plan:
        lines += [f"  not on DeepGEMM: {why}" for why in target.plan.left_out]
    if target.watch_note:
        lines.append(f"  watch: {target.watch_note}")
    cost = estimate.target_cost(target)
    lines.append(f"  estimate: ~{cost.kernels} kernels, ~{cost.nvcc_s:.0f}s of nvcc on one core")
    known = [used[w.key] for w in target.works if used and w.key in used]
    if known:
        lines.append(f"  last warm: {len(set().union(*known))} distinct entries for {len(known)} of "
                     f"{len(target.works)} shapes")
    return lines + not_warmed_lines(target)


def not_warmed_lines(target: targets.Target) -> list[str]:
    """The plan's last word: what a server start may still compile through DeepGEMM, each with
    its reason (empty: none, and `doit env` may turn the start-up sweep off), then what it
    compiles later, at run time."""
    gaps = list(target.plan.not_covered) if target.plan else []
    if target.unsupported:
        gaps.append(target.unsupported_line)
    lines = [f"  not warmed: {gap}" for gap in gaps] or ["  not warmed: none (every DeepGEMM kernel a start "
                                                          "compiles is planned)"]
    later = target.plan.later if target.plan else []
    return lines + [f"  at run time: {gap}" for gap in later]
