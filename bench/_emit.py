"""What bench scripts share: print a JSON result and write it where asked; list cache entries."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def emit(result: dict, out: Path | None) -> int:
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


def entry_names(root) -> set[str]:
    """Entries (complete or not) in one cache root, named as the installed deep_gemm's layout names them."""
    from tasks.state import entries
    from tasks.state import layouts

    return entries.names(Path(root), layouts.detect("deep_gemm"))
