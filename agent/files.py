"""One file as the agent records it: metadata and a content hash, never the content.

:func:`observe` opens a regular file once (``O_NOFOLLOW | O_NONBLOCK``: a symbolic link or a
FIFO is never followed or blocked on) and takes the metadata from ``fstat`` of that same open
file, so the hash and the metadata describe one file even if the name is replaced meanwhile.
On a cold cache the cost of a scan is per-file system calls, not the hash (docs/agent.md), so
this is one ``open`` + ``fstat`` + ``read``s + ``close`` per file, no separate ``lstat``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any

READ_CHUNK = 1 << 20
_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | _NOATIME


@dataclass(frozen=True)
class FileState:
    """What the baseline holds for one path.  ``kind`` is find's ``%y`` letter (``f`` file,
    ``d`` directory, ``l`` link, ``p`` FIFO, ``s`` socket, ``b``/``c`` devices).  ``digest``
    is ``ALGO:HEX`` for regular files, ``None`` for other kinds and for files larger than the
    policy's ``max_hash_mb`` (``details`` of the findings say so)."""

    path: str
    kind: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    digest: str | None

    def same_inode_data(self, other: FileState) -> bool:
        """Unchanged for the incremental rule: same size, mtime, ctime and inode (a chmod or
        chown changes ctime; a content change with a forged mtime still changes ctime)."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino, self.kind) == (
            other.size, other.mtime_ns, other.ctime_ns, other.ino, other.kind)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "mode": f"{stat.S_IMODE(self.mode):04o}",
                "uid": self.uid, "gid": self.gid, "mtime_ns": self.mtime_ns,
                "ino": self.ino, "digest": self.digest}


def text(value: str) -> str:
    """Valid UTF-8 text of a name that may not be (its bytes shown as \\xNN): file names are
    bytes, and any local user can make one that is not UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def kind_of(mode: int) -> str:
    for test, letter in ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"),
                         (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s"), (stat.S_ISBLK, "b"),
                         (stat.S_ISCHR, "c")):
        if test(mode):
            return letter
    return "?"


def from_stat(path: str, st: os.stat_result, digest: str | None) -> FileState:
    return FileState(path, kind_of(st.st_mode), st.st_size, stat.S_IMODE(st.st_mode), st.st_uid,
                     st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest)


def observe(path: str, algorithm: str = "sha256", max_bytes: int = 1 << 30) -> FileState | None:
    """The path's state now, or None when it does not exist.  Raises OSError only for errors
    that are not "gone" (e.g. EACCES), which the caller reports."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno == errno.EPERM and _NOATIME:
            fd = os.open(path, _OPEN_FLAGS & ~_NOATIME)  # not the owner and not root
        elif exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES, errno.EOPNOTSUPP):
            # a symbolic link (O_NOFOLLOW), a socket, or unreadable: metadata only
            try:
                return from_stat(path, os.lstat(path), None)
            except FileNotFoundError:
                return None
        else:
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return from_stat(path, st, None)
        h = hashlib.new(algorithm)
        want = min(st.st_size + 1, READ_CHUNK)  # a small file: one read, short = end of file
        while chunk := os.read(fd, want):
            h.update(chunk)
            if len(chunk) < want:
                break
            want = READ_CHUNK
        return from_stat(path, st, f"{algorithm}:{h.hexdigest()}")
    finally:
        os.close(fd)
