"""Kernel recipes: the source and nvcc argv of every kernel a warm compiled, so a later warm
can compile it again without calling deep_gemm to find it (tasks/runner/kernel_queue.py).

`<root>/jitwarm/recipes/<key>/` holds `kernel.cu`, `argv` (NUL-separated, the build paths as
@SRC@ and @OUT@), `seconds` (the last compile's start and end) and `digests` (the sha256 of
each cubin it produced: a cache entry names its recipe by its binary's digest). <key> is the
shim's key of source and flags (nvcc_shim.sh), which leaves the build paths out. The shim
writes a recipe when it compiles in the foreground, the kernel queue when it does. Recipes
nothing used for RECIPE_MAX_AGE_S go.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.state import records
from tasks.state.kernel_keys import OUT, SRC  # the build paths in an argv

RECIPE_MAX_AGE_S = 30 * 86400
FILES = ("kernel.cu", "argv", "seconds", "digests")


@dataclass(frozen=True)
class Recipe:
    key: str
    path: Path
    seconds: float  # its last compile's wall time: the longest go first


def directory(root: Path) -> Path:
    return records.state_dir(root) / "recipes"


def read_argv(where: Path) -> list[str]:
    return [a.decode() for a in (where / "argv").read_bytes().split(b"\0") if a]


def fill(argv: list[str], source: Path, out: Path) -> list[str]:
    """The argv with its build paths put back."""
    return [str(source) if a == SRC else str(out) if a == OUT else
            a.replace("=" + OUT, f"={out}") if a.endswith("=" + OUT) else a for a in argv]


def shim_key(source: bytes, argv: list[str]) -> str:
    """The nvcc shim's key of a kernel (nvcc_shim.sh): its source and flags, the build paths left out."""
    flags = [a for a in argv if a not in (SRC, OUT) and not a.endswith("=" + OUT)]
    return hashlib.sha256(source + b"".join(a.encode() + b"\n" for a in flags)).hexdigest()[:32]


def derive(recipe_dir: Path, recipe: Recipe, argv: list[str]) -> Recipe:
    """`recipe`'s source with another argv (deep_gemm installed elsewhere), as a recipe of its own
    under the shim's key."""
    source = (recipe.path / "kernel.cu").read_bytes()
    key = shim_key(source, argv)
    return Recipe(key, write(recipe_dir, key, source, argv, recipe.seconds), recipe.seconds)


def write(recipe_dir: Path, key: str, source: bytes, argv: list[str], seconds: float) -> Path:
    """A recipe not compiled here yet (no digests), written whole, then renamed in; one already there is kept."""
    target = recipe_dir / key
    if not target.is_dir():
        scratch = recipe_dir / f".{key}.{os.getpid()}"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            (scratch / "kernel.cu").write_bytes(source)
            (scratch / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
            (scratch / "seconds").write_text(f"0 {seconds}\n")
            (scratch / "digests").write_text("")
            with contextlib.suppress(OSError):  # another process wrote it first
                os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def expected_seconds(recipe_dir: Path, key: str) -> float:
    try:
        start, end = (recipe_dir / key / "seconds").read_text().split()[:2]
        return max(0.0, float(end) - float(start))
    except (OSError, ValueError):
        return 0.0


def save(recipe_dir: Path, key: str, request: Path, started: float, ended: float, digest: str) -> None:
    """Record (or refresh) the recipe of `key` from a queue request (kernel.cu and argv)."""
    target = recipe_dir / key
    if not target.is_dir():  # written whole, then renamed in, as the shim writes one
        scratch = recipe_dir / f".{key}.{os.getpid()}"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            for name in ("kernel.cu", "argv"):
                shutil.copyfile(request / name, scratch / name)
            (scratch / "seconds").write_text(f"{started} {ended}\n")
            (scratch / "digests").write_text(digest + "\n")
            os.rename(scratch, target)
            return
        except OSError:
            pass  # another process recorded it first (or the root is not writable): add to theirs
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        (target / "seconds").write_text(f"{started} {ended}\n")
        with open(target / "digests", "a") as fh:
            fh.write(digest + "\n")


def for_digests(recipe_dir: Path, digests: set[str]) -> list[Recipe]:
    """The complete recipes whose cubins include one of `digests` (the entries' binaries), each
    touched as used; longest first."""
    return sorted(set(by_digest(recipe_dir, digests).values()), key=lambda r: (-r.seconds, r.key))


def by_digest(recipe_dir: Path, digests: set[str]) -> dict[str, Recipe]:
    """Each of `digests` that a complete recipe produced, with that recipe (touched as used)."""
    found: dict[str, Recipe] = {}
    with contextlib.suppress(OSError):
        for where in recipe_dir.iterdir():
            if where.name.startswith("."):
                continue
            try:
                produced = digests & set((where / "digests").read_text().split())
                if not produced or not all((where / name).is_file() for name in FILES):
                    continue
                os.utime(where)
            except OSError:
                continue
            recipe = Recipe(where.name, where, expected_seconds(recipe_dir, where.name))
            found.update(dict.fromkeys(produced, recipe))
    return found


def prune(recipe_dir: Path, max_age_s: float = RECIPE_MAX_AGE_S, now: float | None = None) -> int:
    """Drop recipes nothing used for `max_age_s`, and scratch copies a killed writer left."""
    cutoff = (time.time() if now is None else now) - max_age_s
    dropped = 0
    with contextlib.suppress(OSError):
        for where in recipe_dir.iterdir():
            with contextlib.suppress(OSError):
                stale = where.stat().st_mtime < cutoff
                dead = where.name.startswith(".") and not _alive(where.name.rsplit(".", 1)[-1])
                if stale or dead:
                    shutil.rmtree(where, ignore_errors=True)
                    dropped += 1
    return dropped


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
