"""Small text helpers every layer may use. Pure."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for records and warnings."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{exc.__class__.__name__}: {text[:limit]}"
