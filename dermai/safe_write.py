"""Writing files safely: atomic writes whose failures name the file, their temporaries and killed writers'
leftovers, JSON-lines appends, CSV cells a spreadsheet shows rather than runs, names Windows cannot hold. Apart
because every module that writes a result uses it, and it needs nothing else of dermai.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd


def make_folder(path: Path) -> Path:
    """`mkdir -p` whose error names what is in the way (a file where a folder is needed) or why the folder
    cannot be made, instead of errno text such as "File exists" about a parent."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise NotADirectoryError(f"cannot create folder {path}: {blocker} is a file, not a folder") from None
        raise OSError(f"cannot create folder {path} ({exc.strerror or exc})") from None
    return path


# Names Windows keeps for devices, with any extension ("CON", "nul.txt"): a file or folder so named could not be
# copied to, or shared with, a Windows machine. A trailing "." Windows drops, so "a." would be "a" there.
WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)


def windows_name_problem(name: str) -> str | None:
    """Why a new file or folder `name` (one name, no folders) could not be copied to Windows as it is, else None:
    one rule for the app's run names (`jobs.check_run_name`) and the command line's outputs (`cli`)."""
    if WINDOWS_DEVICE.fullmatch(name):
        return "a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9); pick another"
    if name.endswith("."):
        return f"ends in '.', which Windows drops (it would be {name.rstrip('.')!r} there)"
    return None


def check_writable(path: Path) -> None:
    """Refuse a place a file cannot be written (a folder there, a read-only file there, a file in the way of its
    folder, a folder that cannot be made or written), naming `path`; its folder is made. Called before long
    work whose result goes there, so the error comes first, not after minutes of scoring. The folder is tried
    with a real temporary file: permission bits do not bind root, nor tell a read-only or special file system.
    A file made read-only is refused though root could replace it: someone made it so to keep it."""
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; name a file")
    if path.is_file() and not path.stat().st_mode & 0o222:
        raise PermissionError(f"cannot write {path}: the file is read-only; make it writable or name another file")
    make_folder(path.parent)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write {path}: its folder is not writable")
    try:
        fd, probe = _temporary_beside(path)
    except OSError as exc:
        raise OSError(f"cannot write {path} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _fsync(path: str | os.PathLike[str]) -> None:
    """Flush a file's (or a folder's) contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` only when the block succeeds, so
    readers never see a half-written file and a failure leaves nothing behind. A folder at `path` or an
    unwritable place is refused before the block runs, with an error naming `path`, not the temporary."""
    check_writable(path)
    try:
        fd, tmp = _temporary_beside(path)
    except OSError as exc:
        raise OSError(f"cannot write {path} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        _fsync(tmp)  # the data on disk before the name: a crash after the rename never leaves an empty file
        os.replace(tmp, path)
        with suppress(OSError):  # the rename itself durable too, where the file system lets a folder be synced
            _fsync(path.parent)
    except WriteFailure:  # a nested atomic write's, naming its own file
        raise
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        raise write_failure(path, exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


# A full disk, a quota, a file too large, a read-only disk: errnos that say why the file itself could not be
# written, whatever else the block did (an image it failed to read has another errno, and its own message).
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WriteFailure(OSError):
    """A file that could not be written, named with the cause (`write_failure`)."""


def write_failure(path: Path, exc: OSError, replaced: bool = True) -> WriteFailure:
    """An OSError naming the file that could not be written and why ("cannot write x.json (No space left on
    device)"), errno kept: Python's says only "[Errno 28] No space left on device", or names the temporary. It
    is raised once the temporary is gone, so an older file at `path` is the one the user had (`replaced`: an
    atomic write's; an append's file is not kept as it was)."""
    kept = "; the file there before is kept as it was" if replaced and path.exists() else ""
    error = WriteFailure(f"cannot write {path} ({exc.strerror or exc}){kept}")
    error.errno = exc.errno  # not strerror: with both set, str() would be errno text again
    return error


def atomic_leftover(name: str) -> bool:
    """Whether a file name is a temporary `atomic_target` makes (".NAME.PID@HOST.XXXX.tmp"; ".NAME.XXXX.tmp"
    from older versions): one is left behind only when its process was killed mid-write (SIGKILL, out of
    memory), and is the writer's own, not a file of the user's."""
    return name.startswith(".") and name.endswith(".tmp")


WRITER_TAG = re.compile(r"\.(\d+)@([A-Za-z0-9-]+)\.[^.]+\.tmp$")  # the writer a temporary's name records


def _host() -> str:
    """Where this process's pid means this process, as a temporary's name records it: the machine's name and,
    where /proc tells it, its pid namespace (two containers of one host can share a name and a cache folder, and
    neither sees the other's pids). Letters, digits and '-' only: '.' separates the name's parts."""
    try:
        space = "-" + str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        space = ""
    return (re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host") + space


TEMPORARY_NAME_CHARS = 150  # of the file's name in its temporary's: with the tag (~70), under 255


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path` (mkstemp: its descriptor and name), named ".NAME.PID@HOST.XXXX.tmp"
    (`atomic_leftover`): the writer's pid and host let a later process tell a killed writer's leftover from
    a write in progress (`dead_writer`). The one naming scheme of every atomic write and writability probe.
    NAME is cut to TEMPORARY_NAME_CHARS: with the writer's tag, a long file name (a report named after a long
    upload) would pass the file system's 255-character limit and the write would fail "File name too long"."""
    name = path.name[:TEMPORARY_NAME_CHARS]
    return tempfile.mkstemp(dir=path.parent, prefix=f".{name}.{os.getpid()}@{_host()}.", suffix=".tmp")


def dead_writer(name: str) -> bool:
    """Whether an atomic temporary's writer is known to be gone: its name records this host and a pid that no
    process has now. A temporary of another host (a shared cache) or without a recorded writer (an older
    version's) is not known to be abandoned, nor one whose pid runs again (reused: left to the age rule)."""
    match = WRITER_TAG.search(name)
    if match is None or match[2] != _host():
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (EPERM), or no pid at all
        return False
    return False


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP's list)


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet will show rather than run: one starting like a formula (an uploaded file
    named "=HYPERLINK(…).jpg") gets a leading single quote; anything else (a number too) is returned as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def spreadsheet_csv(table: pd.DataFrame, **options: Any) -> bytes:
    """`table` as UTF-8 CSV bytes for a person to open in Excel (a worklist, per-image predictions): its text
    cells through `csv_safe`, its number columns as they are; `options` go to `DataFrame.to_csv`. Lines end in
    CRLF (RFC 4180), so a carriage return inside a file name is quoted instead of splitting its row. Not for a
    CSV the program reads back (a split manifest): its ids would come back with the quote."""
    text = table.select_dtypes(include=["object", "string"]).columns
    safe = table.assign(**{str(column): table[column].map(csv_safe) for column in text})
    return safe.to_csv(index=False, lineterminator="\r\n", **options).encode()


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """Write a file so readers never see it half-written."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(payload)
    return path


def append_json_lines(path: Path, records: Sequence[object]) -> None:
    """Append one JSON line per record to a log (a run's metrics.jsonl). A last line left torn by a full disk
    or a kill is ended first, so the first record appended after it is not glued onto it and lost to readers
    (which skip a line that is not JSON); a failed write names the log (`write_failure`)."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    try:
        with open(path, "ab+") as handle:  # appends go to the end whatever the position read from
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    text = "\n" + text
            handle.write(text.encode())
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        raise write_failure(path, exc, replaced=False) from None


def write_json_atomic(path: Path, payload: object) -> Path:
    """JSON written atomically (used for configs, reports, metadata)."""
    return atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())
