"""A file's stamp: what says that a file greenmon read (a CA bundle, a secret, a discovery
document) changed and must be read again."""

from __future__ import annotations

import os


def file_stamp(path: str) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
