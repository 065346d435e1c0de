"""A memo of parsed model files, so a run whose registry did not change parses no TOML.

Parsing and validating is most of a no-op run's planning time at a thousand model files
(about 0.8 ms a file). A file's entry is keyed by its path and exact bytes, the whole
memo by the source of the modules that parse (registry.py, launch_args.py, sglang_table.py and its
table) and msgspec's
version, so an edit to either re-parses. Only valid files are kept: an invalid one is
parsed again, so its one-line error is always current. The memo is a cache: unreadable,
stale or unwritable, it is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import msgspec

from tasks.plan import launch_args, registry, sglang_table

_SOURCES = (Path(registry.__file__), Path(launch_args.__file__), Path(sglang_table.__file__),
            sglang_table.TABLE_PATH)


class _Entry(msgspec.Struct, array_like=True):
    digest: str
    spec: registry.ModelSpec


class _Memo(msgspec.Struct):
    code: str
    entries: dict[str, _Entry]


def _code_digest() -> str:
    h = hashlib.sha256(msgspec.__version__.encode())
    for source in _SOURCES:
        h.update(source.read_bytes())
    return h.hexdigest()[:32]


def _file_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _enc(obj):
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(type(obj))


def _dec(kind, obj):
    if kind is Path:
        return Path(obj)
    raise NotImplementedError(kind)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc)
_DECODER = msgspec.msgpack.Decoder(_Memo, dec_hook=_dec)


def load(models_dir: Path, memo_file: Path | None) -> list[registry.ModelSpec | registry.RegistryError]:
    """registry.load(models_dir), reusing memo_file's parses of unchanged files."""
    if memo_file is None:
        return registry.load(models_dir)
    code = _code_digest()
    old = _read(memo_file, code)
    out, kept, changed = [], {}, False
    for path in registry.model_files(models_dir):
        try:
            data = path.read_bytes()
        except OSError:
            out.append(registry.load_file(path))  # says why, in its one line
            continue
        digest, key = _file_digest(data), str(path)
        entry = old.get(key)
        if entry is None or entry.digest != digest:
            spec, changed = registry.load_file(path, data), True
            entry = _Entry(digest, spec) if isinstance(spec, registry.ModelSpec) else None
        if entry is not None:
            kept[key] = entry
            spec = entry.spec
        out.append(spec)
    if changed or kept.keys() != old.keys():
        _write(memo_file, _Memo(code, kept))
    return out


def _read(memo_file: Path, code: str) -> dict[str, _Entry]:
    try:
        memo = _DECODER.decode(memo_file.read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
        return {}
    return memo.entries if memo.code == code else {}


def _write(memo_file: Path, memo: _Memo) -> None:
    tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
    try:  # into the state dir a warm made: `doit list` on a new host creates nothing
        tmp.write_bytes(_ENCODER.encode(memo))
        os.replace(tmp, memo_file)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
