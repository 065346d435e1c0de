"""Offline lookup of a file in the local Hugging Face cache.

huggingface_hub's try_to_load_from_cache pulls in its whole HTTP stack (~0.2 s), and
that would be paid by every `doit list`. The cache layout is documented and stable:
<HF_HUB_CACHE>/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/<file>}.
The cache location itself still comes from huggingface_hub's constants (HF_HOME etc.).
"""

from __future__ import annotations

from pathlib import Path


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    ref = repo / "refs" / revision
    if ref.is_file():  # a branch or tag name resolves to a commit
        revision = ref.read_text().strip()
    if not revision or "/" in revision or revision.startswith("."):
        return None
    path = repo / "snapshots" / revision / filename
    return path if path.is_file() else None
