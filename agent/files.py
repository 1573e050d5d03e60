"""One file as the agent records it: metadata and a content hash, never the content.

:func:`observe` opens a regular file once (``O_NOFOLLOW | O_NONBLOCK``: a symbolic link or a
FIFO is never followed or blocked on) and takes the metadata from ``fstat`` of that same open
file, so the hash and the metadata describe one file even if the name is replaced meanwhile.
On a cold cache the cost of a scan is per-file system calls, not the hash (docs/agent.md), so
this is one ``open`` + ``fstat`` + ``read``s + ``close`` per file, no separate ``lstat``.

No link is followed anywhere below a sensitive path, not even in a folder part of the name:
a scan opens each file relative to the descriptor of the folder it listed (``openat``), and a
single path (a watch event) is reached from its sensitive path one folder at a time, each
opened ``O_DIRECTORY | O_NOFOLLOW`` relative to the previous (:func:`observe_under`).  A
local user who swaps a folder for a link to ``/etc`` between the event and the re-hash gets
:class:`Swapped`, never the hash or metadata of the link's target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from typing import Any, NamedTuple

READ_CHUNK = 1 << 20
_NOATIME = getattr(os, "O_NOATIME", 0)
_WILLNEED = os.POSIX_FADV_WILLNEED
_HASHES: dict[str, Callable[[bytes], Any]] = {  # the policy's choices, without new()'s lookup
    "sha256": hashlib.sha256, "blake2b": hashlib.blake2b}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | _NOATIME


class FileState(NamedTuple):
    """What the baseline holds for one path (a named tuple: a scan makes one per file, and a
    tuple is made 3× faster than a frozen dataclass).  ``kind`` is find's ``%y`` letter (``f`` file,
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
    bytes, and any local user can make one that is not UTF-8.  ASCII (most names and every
    digest) is returned as it is: the round trip cannot change it, and every string of every
    event passes here (measured: 43 → 34 µs of CPU to make one drift event)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def kind_of(mode: int) -> str:
    for test, letter in ((stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"),
                         (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s"), (stat.S_ISBLK, "b"),
                         (stat.S_ISCHR, "c")):
        if test(mode):
            return letter
    return "?"


def from_stat(path: str, st: os.stat_result, digest: str | None) -> FileState:
    mode = st.st_mode
    return FileState(path, "f" if stat.S_ISREG(mode) else kind_of(mode), st.st_size,
                     stat.S_IMODE(mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns,
                     st.st_ino, digest)


class Swapped(OSError):
    """A folder on the way to a path is no longer a folder (replaced by a link or a file)."""

    def __init__(self, path: str, folder: str, now: str) -> None:
        super().__init__(errno.ELOOP, f"{folder} is now {now}; not followed")
        self.path = path
        self.folder = folder
        self.now = now


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _what(name: str, dir_fd: int) -> str:
    """What a name that is not a folder is now (for the finding): a link and its target."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "gone"
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"a symbolic link to {text(os.readlink(name, dir_fd=dir_fd))}"
        except OSError:
            return "a symbolic link"
    return f"of type {kind_of(st.st_mode)}"


def open_parent(root: str, path: str) -> tuple[int, str] | None:
    """The folder holding PATH, reached from ROOT (its sensitive path, whose own last name
    is not followed either) one ``openat`` at a time without following a link, and PATH's
    last name; None when a folder on the way is gone; :class:`Swapped` when one is not a
    folder any more.  The caller closes the descriptor."""
    root = root.rstrip("/") or "/"
    rel = path[len(root):].strip("/") if path != root else ""
    parts = rel.split("/") if rel else []
    start, first = os.path.split(root) if root != "/" else ("/", "")
    names = ([first] if first else []) + parts or ["."]  # "." : the root "/" itself
    try:
        # Above the sensitive path the names are the policy's (an operator's link is fine).
        fd = os.open(start or "/", _DIR_FLAGS & ~os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        for i, name in enumerate(names[:-1]):
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR) and _what(name, fd) in (
                        "gone", "of type f"):
                    os.close(fd)
                    return None  # gone, or a file now: PATH is not there
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                folder = os.path.join(start, *names[: i + 1])
                raise Swapped(path, folder, _what(name, fd)) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, names[-1]


def observe_under(root: str, path: str, algorithm: str = "sha256",
                  max_bytes: int = 1 << 30) -> FileState | None:
    """:func:`observe` of PATH below sensitive path ROOT without following any link."""
    found = open_parent(root, path)
    if found is None:
        return None
    fd, name = found
    try:
        return observe(path, algorithm, max_bytes, dir_fd=fd, name=name)
    finally:
        os.close(fd)


def observe(path: str, algorithm: str = "sha256", max_bytes: int = 1 << 30,
            dir_fd: int | None = None, name: str | None = None) -> FileState | None:
    """The path's state now, or None when it does not exist.  With ``dir_fd``, the file is
    ``name`` in that open folder (``openat``: no folder part of PATH is looked up again).
    Raises OSError only for errors that are not "gone" (e.g. EACCES), which the caller
    reports."""
    opened = open_file(path, dir_fd, name)
    return opened if not isinstance(opened, int) else finish(path, opened, algorithm, max_bytes)


def open_file(path: str, dir_fd: int | None = None, name: str | None = None,
              readahead: bool = False) -> int | FileState | None:
    """First half of :func:`observe`: an open descriptor of the file (with ``readahead``,
    the kernel is asked to start reading it now — ``POSIX_FADV_WILLNEED`` — so that a scan
    opening a few hundred files before reading the first has that many reads in flight on
    one thread: measured 3× faster on a cold cache than 16 reader threads, docs/agent.md),
    or its state when it cannot be opened for reading (a link, a socket, unreadable), or
    None when it is gone."""
    where = path if dir_fd is None else (name or os.path.basename(path))
    try:
        fd = os.open(where, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno == errno.EPERM and _NOATIME:
            fd = os.open(where, _OPEN_FLAGS & ~_NOATIME, dir_fd=dir_fd)  # not owner, not root
        elif exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES, errno.EOPNOTSUPP):
            # a symbolic link (O_NOFOLLOW), a socket, or unreadable: metadata only
            try:
                return from_stat(path, os.stat(where, dir_fd=dir_fd, follow_symlinks=False),
                                 None)
            except FileNotFoundError:
                return None
        else:
            raise
    if readahead:
        try:  # noqa: SIM105 (not contextlib.suppress: this runs once per file of a scan)
            os.posix_fadvise(fd, 0, 0, _WILLNEED)
        except OSError:
            pass  # a FIFO, or no readahead: read as it comes
    return fd


def finish(path: str, fd: int, algorithm: str, max_bytes: int,
           st: os.stat_result | None = None) -> FileState:
    """Second half of :func:`observe`: metadata from ``fstat`` of the open file (``st``
    when the caller already took it) and the hash of its content; closes ``fd``."""
    try:
        if st is None:
            st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return from_stat(path, st, None)
        want = min(st.st_size + 1, READ_CHUNK)  # a small file: one read, short = end of file
        chunk = os.read(fd, want)
        h = _HASHES[algorithm](chunk) if algorithm in _HASHES else hashlib.new(algorithm, chunk)
        while len(chunk) == want:
            want = READ_CHUNK
            chunk = os.read(fd, want)
            if not chunk:
                break
            h.update(chunk)
        return from_stat(path, st, f"{algorithm}:{h.hexdigest()}")
    finally:
        os.close(fd)
