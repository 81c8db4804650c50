"""Disk space: the bytes a folder takes and the bytes free on a disk. Plain file-system reads, shared by job control
(a job is refused on a full disk), the Runs table (each run's size) and deletion (the bytes it freed)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def folder_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes the files below `path` take (links are counted, not followed); 0 for a missing folder."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the disk that holds `path`, or would hold it (its nearest existing parent)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free
