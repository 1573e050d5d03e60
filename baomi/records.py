"""The controller's own records: where they live and how they are written.

Escrow entries, the offboarding ledger and account requests are append-only JSON lines, mode
0600 in 0700 folders, fsync'd, so evidence is never rewritten and survives a crash.  Writers
and readers of one file take an ``flock`` on it (exclusive to append, shared to read), so
concurrent ``baomi`` processes never interleave or read half a line.  A line left torn by a
writer that died mid-write is sealed off with a newline before the next append (so it cannot
swallow the next record) and reported by every reader, never skipped in silence.  Files and
folders are opened without following links, and loose modes are tightened on every write.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class RecordError(Exception):
    """A record file cannot be read or written; the message names the file (and line)."""


def state_dir() -> Path:
    """``$BAOMI_STATE_DIR``, else /var/lib/baomi."""
    return Path(os.environ.get("BAOMI_STATE_DIR") or "/var/lib/baomi")


def _folder(path: Path) -> None:
    """Make the record's folder (0700) or check the existing one: ours, a real directory."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise RecordError(f"{folder}: not a directory (a link?); records are not written there")
    if info.st_uid != os.geteuid():
        raise RecordError(f"{folder}: owned by uid {info.st_uid}, not by this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700, follow_symlinks=False)


def _open(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the record file is a link
            raise RecordError(f"{path}: is a link; records are never read or written "
                              "through one") from None
        raise RecordError(f"{path}: cannot open the records: {exc.strerror}") from None


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records under an exclusive lock (0600 file, 0700 folder); never rewrites a line."""
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    _folder(path)
    fd = _open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise RecordError(f"{path}: not a regular file of this user")
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            lines = "\n" + lines  # seal off a torn last line: it stays damaged, alone
        data = lines.encode()
        while data:
            written = os.write(fd, data)
            data = data[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """The records of a file ([] when absent), read under a shared lock.

    A line that is not a JSON object (a torn write, an edit) raises :class:`RecordError`
    naming ``FILE:LINE`` with ``strict``; otherwise it is skipped with a warning on stderr
    naming it, so a damaged record is always seen by someone.
    """
    if not os.path.lexists(path):
        return []
    fd = _open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with os.fdopen(os.dup(fd), "rb") as stream:
            raw = stream.read()
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: cannot read the records: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = None
        if isinstance(item, dict):
            records.append(item)
        elif strict:
            raise RecordError(f"{path}:{number}: not a JSON record")
        else:
            print(f"baomi: {path}:{number}: damaged record skipped (not a JSON object)",
                  file=sys.stderr)
    return records
