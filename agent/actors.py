"""Who changed a file: fanotify names the process (and so the user) behind each write.

inotify says *what* changed, never who.  fanotify (Linux, ``CAP_SYS_ADMIN``) reports with
each event the writer's PID and an open descriptor of the file.  The agent marks every folder
under its sensitive paths (inode marks with ``FAN_EVENT_ON_CHILD``, like inotify's watches)
for ``FAN_MODIFY | FAN_CLOSE_WRITE``.  Not a mount or file-system mark: a mount mark misses
writes made through the host's mounts (the service's sandbox, ``ProtectSystem=strict``, runs
it in a mount namespace of its own with copies of them), and a file-system mark wakes the
agent for every write anywhere on the disk (logs, databases: no longer idle).  Inode marks
follow the folder whatever mount or namespace the write comes through.  On its own thread
the agent reads at
event time what ``/proc/PID`` says of the writer: real and effective uid (and the user
names), the audit login uid (the person behind ``sudo``/``su``, when the kernel tracks it),
``comm`` and ``exe``.  The last writer of each sensitive file is kept for a short while
(bounded), and the drift finding of that file carries it as ``actor`` evidence.

What it cannot tell, and says so in the finding (``actor: unknown (why)``):

* a change that is not a write — mode, owner, rename, delete: fanotify's descriptor mode
  reports writes only (the audit records of the R-LOG rules name those, where auditd runs);
* a writer that exited before its ``/proc`` entry was read (a one-line shell ``>>``);
* an agent without ``CAP_SYS_ADMIN`` (not root, or a sandbox that drops it): the reason
  ``fanotify_init`` gave.

Folders are marked after the start scan (every folder of the baseline) and as new ones
appear; a folder that cannot be marked (``max_user_marks``) makes its files' actor
``unknown`` with that reason.  Idle, the thread sleeps in ``poll`` with no timeout: no
wake-ups.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import select
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_MARK_ADD = 0x1
FAN_MARK_DONT_FOLLOW = 0x4
FAN_MARK_ONLYDIR = 0x8
FAN_EVENT_ON_CHILD = 0x08000000
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_Q_OVERFLOW = 0x4000
AT_FDCWD = -100
EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata (24 bytes)
KEEP = 4096  # last writers remembered
KEEP_SECONDS = 300.0
SAME_PROCESS = 0.5  # a PID's /proc read is reused this long (a writer of 10,000 files: one)
NO_AUID = 4294967295


@dataclass(frozen=True)
class Actor:
    """The process that wrote a file, as /proc showed it at the event."""

    pid: int
    uid: int | None
    user: str
    euid: int | None
    euser: str
    login_uid: int | None
    login_user: str | None
    comm: str
    exe: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "uid": self.uid, "user": self.user, "euid": self.euid,
                "euser": self.euser, "login_uid": self.login_uid,
                "login_user": self.login_user, "comm": self.comm, "exe": self.exe}

    def __str__(self) -> str:
        who = self.user if self.euid == self.uid else f"{self.user} as {self.euser}"
        login = (f", login {self.login_user}" if self.login_user and self.login_user != self.user
                 else "")
        return f"{who} (uid {self.uid}{login}) pid {self.pid} {self.comm} ({self.exe})"


@functools.lru_cache(maxsize=4096)
def user_name(uid: int | None) -> str:
    """The host's name of a uid (cached: names rarely change), else the number."""
    import pwd

    if uid is None:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="backslashreplace") as f:
            return f.read()
    except OSError:
        return None


def process(pid: int, now: float | None = None) -> Actor | None:
    """What /proc says of PID now, or None when it is gone."""
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    uids = next((line.split()[1:3] for line in status.splitlines()
                 if line.startswith("Uid:")), None)
    uid = int(uids[0]) if uids else None
    euid = int(uids[1]) if uids and len(uids) > 1 else uid
    auid_text = (_read(f"/proc/{pid}/loginuid") or "").strip()
    auid = int(auid_text) if auid_text.isdigit() and int(auid_text) != NO_AUID else None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = "unknown"
    comm = (_read(f"/proc/{pid}/comm") or "unknown").strip()
    return Actor(pid, uid, user_name(uid), euid, user_name(euid), auid,
                 user_name(auid) if auid is not None else None, comm, exe,
                 time.time() if now is None else now)


def parse(buffer: bytes) -> list[tuple[int, int, int]]:
    """(mask, fd, pid) of each event in one read (pure: unit-tested on packed records)."""
    out = []
    offset = 0
    while offset + EVENT.size <= len(buffer):
        length, _vers, _res, _meta, mask, fd, pid = EVENT.unpack_from(buffer, offset)
        if length < EVENT.size:
            break
        out.append((mask, fd, pid))
        offset += length
    return out


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class Actors:
    """The fanotify reader; :meth:`who` answers for the processing thread."""

    def __init__(self, roots: list[str], errors: Callable[[str], None]) -> None:
        self.roots = roots
        self.errors = errors
        self.unavailable: str | None = "not started"
        self._last: OrderedDict[str, Actor | str] = OrderedDict()
        self._lock = threading.Lock()
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._libc: ctypes.CDLL | None = None
        self.marked: set[str] = set()
        self.unmarked: dict[str, str] = {}  # folder → why it has no mark
        self.events = 0
        self._seen: dict[int, Actor] = {}  # PID → its last /proc read (reader thread only)

    def start(self) -> None:
        """Open fanotify and start the reader; on failure say why (the agent runs on
        without it: every actor is then ``unknown`` with that reason)."""
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0)
        fd = libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, flags)
        if fd < 0:
            err = ctypes.get_errno()
            self.unavailable = (f"fanotify_init: {os.strerror(err)}"
                                + (" (needs CAP_SYS_ADMIN: run the agent as root)"
                                   if err in (errno.EPERM, errno.EACCES) else ""))
            return
        self._libc = libc
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self.unavailable = None
        self._thread = threading.Thread(target=self._run, name="baomi-fanotify", daemon=True)
        self._thread.start()

    def mark(self, folders: Iterable[str]) -> None:
        """Mark FOLDERS (not following a link) for writes to the files in them."""
        if self._libc is None or self._fd < 0:
            return
        mask = ctypes.c_uint64(FAN_MODIFY | FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD)
        for folder in folders:
            if folder in self.marked:
                continue
            if self._libc.fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW
                                        | FAN_MARK_ONLYDIR, mask, AT_FDCWD,
                                        os.fsencode(folder)) == 0:
                self.marked.add(folder)
                self.unmarked.pop(folder, None)
            else:
                err = ctypes.get_errno()
                if err not in (errno.ENOENT, errno.ENOTDIR):  # gone meanwhile: nothing to mark
                    self.unmarked[folder] = f"fanotify_mark: {os.strerror(err)}"

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1

    def forget(self, folder: str) -> None:
        """A folder went (deleted or moved away): its mark went with its inode."""
        self.marked.discard(folder)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        me = os.getpid()
        while True:
            try:
                ready = {fd for fd, _ in poller.poll()}
                if self._wake_r in ready:
                    return
                try:
                    buffer = os.read(self._fd, 64 * 1024)
                except BlockingIOError:
                    continue
                for mask, fd, pid in parse(buffer):
                    self._one(mask, fd, pid, me)
            except Exception as exc:  # the reader must survive anything; the actor is unknown
                self.errors(f"fanotify: {type(exc).__name__}: {exc}")
                time.sleep(1)

    def _one(self, mask: int, fd: int, pid: int, me: int) -> None:
        if fd < 0:
            if mask & FAN_Q_OVERFLOW:
                self.errors("fanotify queue overflow: some writers not recorded")
            return
        try:
            if pid == me:
                return
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                return
            if not under(path, self.roots):
                return
            self.events += 1
            now = time.time()
            known = self._seen.get(pid)
            if known is not None and now - known.at <= SAME_PROCESS:
                found: Actor | str = known
            else:
                actor = process(pid, now)
                if len(self._seen) > KEEP:
                    self._seen.clear()
                if actor is not None:
                    self._seen[pid] = actor
                found = actor or f"process {pid} exited before it could be read"
            with self._lock:
                self._last.pop(path, None)
                self._last[path] = found
                while len(self._last) > KEEP:
                    self._last.popitem(last=False)
        finally:
            os.close(fd)

    def who(self, path: str, wrote: bool) -> dict[str, Any]:
        """The ``actor`` evidence of a change to PATH: the last writer fanotify saw, or
        ``{"unknown": why}``."""
        if not wrote:
            return {"unknown": "not a write (mode, owner, name or removal): fanotify names "
                               "writers only; the audit log of the R-LOG rules has the rest"}
        if self.unavailable is not None:
            return {"unknown": self.unavailable}
        with self._lock:
            found = self._last.get(path)
        if found is None:
            folder = os.path.dirname(path)
            why = self.unmarked.get(folder) or ("its folder is not marked yet" if folder
                                                not in self.marked else
                                                "no write by another process seen")
            return {"unknown": why}
        if isinstance(found, str):
            return {"unknown": found}
        if time.time() - found.at > KEEP_SECONDS:
            return {"unknown": "last writer seen too long ago"}
        return {**found.as_dict(), "text": str(found)}
