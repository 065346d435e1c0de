"""Print a benchmark's JSON result and write it where asked (bench scripts share this)."""

import json
from pathlib import Path


def emit(result: dict, out: Path | None) -> int:
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0
