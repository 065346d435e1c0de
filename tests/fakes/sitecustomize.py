"""Test-only write faults, loaded by every Python process the tests start (tests/fakes is
on their PYTHONPATH): the CI machine runs as root in a container, where neither a
read-only directory nor a small tmpfs can be had.

  FAKE_WRITE_FAIL  "PATH:ERRNO" (e.g. "/tmp/x/cache:ENOSPC"): opening a file for writing,
                   creating a directory or renaming into PATH or below fails with that errno,
                   as a full disk (ENOSPC) or a read-only mount (EROFS) would
"""

import os
import sys

_spec = os.environ.get("FAKE_WRITE_FAIL")
if _spec:
    import errno as _errno

    _prefix, _, _name = _spec.rpartition(":")
    _code = getattr(_errno, _name)
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _under(path) -> bool:
        try:
            text = os.fsdecode(path)
        except TypeError:
            return False
        full = os.path.abspath(text)
        return full == _prefix or full.startswith(_prefix.rstrip("/") + "/")

    def _hook(event, args):
        if event == "open" and args[0] is not None and _under(args[0]):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE:
                raise OSError(_code, os.strerror(_code), os.fsdecode(args[0]))
        elif event in ("os.mkdir", "os.rename", "os.link", "os.symlink") and _under(args[1] if event != "os.mkdir"
                                                                                     else args[0]):
            target = args[0] if event == "os.mkdir" else args[1]
            raise OSError(_code, os.strerror(_code), os.fsdecode(target))

    sys.addaudithook(_hook)
