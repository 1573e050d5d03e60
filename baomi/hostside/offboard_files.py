"""The departed user's files, touched without ever following a link (R-OFF, R-RET).

Shipped as text and run as root on a managed host by ``baomi/fixes/offboarding.py``:

    python3 -c "$PROGRAM" keys-done HOME PATH...        # exit 0: nothing left to quarantine
    python3 -c "$PROGRAM" quarantine UID HOME PATH DEST  # take PATH out of sshd's reach
    python3 -c "$PROGRAM" archive UID HOME QUARANTINE CUSTODIAN ARCHIVE [SENSITIVE...]

Why: the departing user is not trusted and owns their home. With ``~/.ssh -> /root/.ssh``
a shell ``mv ~/.ssh/authorized_keys`` moved root's keys; with ``authorized_keys ->
/bin/dash`` a ``chmod 0600`` made /bin/sh unusable; a folder named ``x<newline>etc`` turned a
newline-separated file list into ``etc/shadow`` for tar run from ``/``; ``sha256sum`` on a link
to /dev/zero never ended. Here every path is opened one component at a time from ``/`` with
``O_PATH|O_NOFOLLOW`` relative to the previous folder's descriptor, so a link anywhere on the
way is seen, never followed:

- a link inside the home is itself the thing quarantined (its target is written down, the
  link removed from its folder); a link outside the home is refused, naming it;
- a regular file's content is kept in the root-only quarantine only when it is the user's
  own (owner UID, one hard link); the name is removed from the user's folder either way, so
  sshd cannot read it; nothing of the user's is ever chowned or chmodded;
- the archive walks folders with ``os.fwalk`` (no links, each folder checked to be the one
  listed, one file system per top like ``find -xdev``) and holds regular files only, each
  opened ``O_NOFOLLOW|O_NONBLOCK`` and hashed from the same descriptor tar reads; names are
  kept byte for byte (a newline stays in the name), the manifest is ``sha256sum -c``'s own
  format with its escapes. The caller bounds the run with ``timeout``.

Stdlib only: the host has python3 and nothing of baomi.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import sys
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

KEYS_MAX = 1 << 20  # an authorized_keys file larger than this is not kept, only removed


class Refused(Exception):
    """The path cannot be acted on safely; the message names it."""


def inside(path: str, home: str) -> bool:
    return bool(home) and home != "/" and path.startswith(home.rstrip("/") + "/")


def parts(path: str) -> list[str]:
    if not path.startswith("/"):
        raise Refused(f"{path}: not an absolute path")
    names = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in names):
        raise Refused(f"{path}: '.' or '..' in the path")
    return names


def walk(path: str) -> tuple[int, str, str, os.stat_result | None]:
    """(folder descriptor, last name, path so far, lstat of it) for the first entry on PATH
    that is not a real folder (a link, a file), or the last one; None when missing.

    Every folder on the way is opened ``O_PATH|O_NOFOLLOW`` under the previous one."""
    names = parts(path)
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    so_far = ""
    for index, name in enumerate(names):
        so_far += "/" + name
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return fd, name, so_far, None
        if index == len(names) - 1 or not stat.S_ISDIR(st.st_mode):
            return fd, name, so_far, st
        child = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
        if not os.path.samestat(os.fstat(child), st):
            raise Refused(f"{so_far}: changed while it was opened")
        os.close(fd)
        fd = child
    raise Refused(f"{path}: empty path")


def pending(home: str, path: str) -> str | None:
    """What on PATH still gives sshd a key (a file or a link), or None."""
    fd, _name, where, st = walk(path)
    os.close(fd)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        return where
    if where != path:
        return None  # a file where a folder should be: PATH cannot exist
    return where if stat.S_ISREG(st.st_mode) else None


def keys_done(home: str, paths: list[str]) -> int:
    return 1 if any(pending(home, p) for p in paths) else 0


def write_root_file(folder: int, name: str, data: bytes) -> None:
    """A new root-only file NAME in FOLDER (a root folder's descriptor), replaced atomically."""
    tmp = f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=folder)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)


def folder_of(path: str, owners: tuple[int, ...] = (0,)) -> int:
    """A descriptor on PATH, a real folder owned by one of OWNERS, reached without links."""
    fd, name, where, st = walk(path)
    try:
        if st is None or where != path or not stat.S_ISDIR(st.st_mode) \
                or st.st_uid not in owners:
            raise Refused(f"{path}: not a folder of UID {'/'.join(map(str, owners))} "
                          "reached without links")
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
    finally:
        os.close(fd)


def quarantine(uid: int, home: str, path: str, dest: str) -> int:
    """Take PATH out of sshd's reach: its name removed, the user's own content kept in DEST."""
    folder, name, where, st = walk(path)
    try:
        if st is None or (where != path and not stat.S_ISLNK(st.st_mode)):
            return 0
        if stat.S_ISLNK(st.st_mode) and not inside(where, home):
            raise Refused(f"{where}: a link outside {uid}'s home {home}; not followed, not "
                          "removed (an administrator's to look at)")
        q = folder_of(os.path.dirname(dest))
        try:
            base = os.path.basename(dest)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=folder)
                write_root_file(q, base + ".link", os.fsencode(
                    f"{where}: a link to {target} (removed; its target not followed)\n"))
                what = f"{where}: the link (to {target}) removed, its target untouched"
            elif stat.S_ISREG(st.st_mode):
                what = keep_file(folder, name, st, uid, q, base, where)
            else:
                print(f"{where}: not a file (sshd reads no keys from it); left")
                return 0
            os.unlink(name, dir_fd=folder)
            print(what)
            return 0
        finally:
            os.close(q)
    finally:
        os.close(folder)


def keep_file(folder: int, name: str, st: os.stat_result, uid: int, q: int, base: str,
              where: str) -> str:
    """Copy a key file's content into the quarantine when it is the user's own."""
    if st.st_uid != uid or st.st_nlink != 1 or st.st_size > KEYS_MAX:
        write_root_file(q, base + ".note", os.fsencode(
            f"{where}: owner {st.st_uid}, {st.st_nlink} links, {st.st_size} bytes: not the "
            "user's own file; its name removed, its content not kept\n"))
        return f"{where}: removed (not the user's own file: content not kept)"
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    try:
        if not os.path.samestat(os.fstat(fd), st):
            raise Refused(f"{where}: changed while it was read")
        data = os.read(fd, KEYS_MAX + 1)
    finally:
        os.close(fd)
    write_root_file(q, base, data)
    return f"{where}: moved to the quarantine"


# --- the archive -------------------------------------------------------------------------------

def regular_files(top: str, uid: int, only_uid: bool,
                  ) -> Iterator[tuple[str, int, os.stat_result]]:
    """(path, open descriptor, stat) of every regular file under TOP: no link followed, one
    file system. With ONLY_UID, files of UID only; otherwise a file of another owner only when
    it has one link (a hard link in the home may be a system file). The caller closes each
    descriptor."""
    folder, name, where, st = walk(top)
    try:
        if st is None or where != top or not stat.S_ISDIR(st.st_mode):
            return
        device = st.st_dev
        for dirpath, dirs, files, dirfd in os.fwalk(name, dir_fd=folder, follow_symlinks=False):
            base = os.path.join(os.path.dirname(top), dirpath)
            dirs[:] = [d for d in dirs
                       if os.stat(d, dir_fd=dirfd, follow_symlinks=False).st_dev == device]
            for file in sorted(files):
                try:
                    fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_NOCTTY, dir_fd=dirfd)
                except OSError:
                    continue  # a link (ELOOP), gone since it was listed, unreadable
                info = os.fstat(fd)
                mine = info.st_uid == uid
                if stat.S_ISREG(info.st_mode) and (mine or (not only_uid
                                                            and info.st_nlink == 1)):
                    yield os.path.join(base, file), fd, info
                else:
                    os.close(fd)
    finally:
        os.close(folder)


class Hashing:
    """A reader that hashes what tar reads (the archived bytes are the hashed bytes)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.digest = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


def manifest_line(digest: str, name: str) -> bytes:
    """One line of ``sha256sum``'s format, with its escapes for '\\\\', newline, CR."""
    raw = os.fsencode(name)
    if any(c in raw for c in (b"\\", b"\n", b"\r")):
        raw = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + digest.encode() + b"  " + raw + b"\n"
    return digest.encode() + b"  " + raw + b"\n"


def archive(uid: int, home: str, quarantine_dir: str, custodian: str, path: str,
            sensitive: list[str]) -> int:
    owner = pwd.getpwnam(custodian).pw_uid
    tops: list[tuple[str, bool]] = [(quarantine_dir, False)]
    if home and home not in ("/", "/nonexistent"):
        fd, _n, where, st = walk(home)
        os.close(fd)
        if st is not None and where == home and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            tops.insert(0, (home, False))
        else:
            print(f"{home}: not a folder of UID {uid} reached without links; not archived")
    tops += [(p, True) for p in sensitive]
    folder = folder_of(os.path.dirname(path), (0, owner))
    name = os.path.basename(path)
    seen: set[tuple[int, int]] = set()
    lines: list[bytes] = []
    part = os.open(name + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                   0o600, dir_fd=folder)
    try:
        with os.fdopen(part, "wb", closefd=False) as raw, \
                tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.GNU_FORMAT,
                             encoding="utf-8", errors="surrogateescape") as tar:
            for top, only_uid in tops:
                for file, fd, info in regular_files(top, uid, only_uid):
                    with os.fdopen(fd, "rb") as stream:
                        if (info.st_dev, info.st_ino) in seen:
                            continue
                        seen.add((info.st_dev, info.st_ino))
                        member = tarfile.TarInfo(file.lstrip("/"))
                        member.size, member.mtime = info.st_size, int(info.st_mtime)
                        member.mode, member.uid, member.gid = (stat.S_IMODE(info.st_mode),
                                                               info.st_uid, info.st_gid)
                        reader = Hashing(stream)
                        tar.addfile(member, reader)
                        lines.append(manifest_line(reader.digest.hexdigest(), member.name))
            raw.flush()
        os.fsync(part)
        whole = hashlib.sha256()
        with os.fdopen(os.open(name + ".part", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder),
                       "rb") as back:
            for chunk in iter(lambda: back.read(1 << 20), b""):
                whole.update(chunk)
        for suffix, data in ((".manifest", b"".join(lines)),
                             (".sha256", f"{whole.hexdigest()}  {name}\n".encode())):
            write_root_file(folder, name + suffix, data)
        for suffix in (".manifest", ".sha256", ".part"):
            fd = os.open(name + suffix, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
            os.fchown(fd, owner, -1)
            os.fchmod(fd, 0o400)
            os.close(fd)
        os.replace(name + ".part", name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(part)
        os.close(folder)
    print(f"{path}: {len(lines)} files")
    return 0


def main(argv: list[str]) -> int:
    action, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    try:
        if action == "keys-done" and args:
            return keys_done(args[0], args[1:])
        if action == "quarantine" and len(args) == 4:
            return quarantine(int(args[0]), args[1], args[2], args[3])
        if action == "archive" and len(args) >= 5:
            return archive(int(args[0]), args[1], args[2], args[3], args[4], args[5:])
    except Refused as exc:
        sys.stderr.write(f"refused: {exc}\n")
        return 1
    sys.stderr.write("usage: keys-done HOME PATH... | quarantine UID HOME PATH DEST | "
                     "archive UID HOME QUARANTINE CUSTODIAN ARCHIVE [SENSITIVE...]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
