"""Small text helpers every layer may use. Pure."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for records and warnings."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{exc.__class__.__name__}: {text[:limit]}"


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 kernel`, `2 kernels`: a count with its noun as English says it."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
