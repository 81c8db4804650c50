"""What a file says, parsed once per version of the file. The Training page lists every run on each click, and
parsing each run's metrics.jsonl (thousands of lines) again and again was most of that listing; a file's version
is its device, inode, size, mtime and ctime (ns; ctime cannot be set back, as `cp -p` or `touch -d` set mtime),
read from the open file before its text, so a file appended to (a size that grows), rewritten or replaced, moved
(a new path) or deleted (it cannot be opened) is read again on the next call. Only what files say is kept:
whether a run's process lives is for the caller to ask each time."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 1024  # files kept, the least recently read dropped first: two per run (metrics.jsonl, job.log)
_entries: OrderedDict[tuple[Callable[[str], Any], str], tuple[tuple[int, ...], Any]] = OrderedDict()
_lock = threading.Lock()  # Streamlit renders each session in a thread of its own


def parsed(path: str | os.PathLike[str], parse: Callable[[str], T]) -> T:
    """`parse(text)` of the file at `path` (read as `Path.read_text(errors="replace")` reads it), kept until the
    file changes. The value is shared by every caller: it must not be modified (return tuples, not lists). An
    OSError opening or reading the file (FileNotFoundError once it is deleted) is the caller's, never cached."""
    key = (parse, os.path.abspath(path))
    with open(path, errors="replace") as handle:
        info = os.fstat(handle.fileno())  # before the text: a file that grows as it is read is read again next time
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with _lock:
            hit = _entries.get(key)
            if hit is not None and hit[0] == stamp:
                _entries.move_to_end(key)
                return hit[1]
        value = parse(handle.read())
    with _lock:
        _entries[key] = (stamp, value)
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    """Forget every parsed file (tests that doctor a file within one mtime tick, keeping its size)."""
    with _lock:
        _entries.clear()
