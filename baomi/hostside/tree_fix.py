"""Change owners and modes across a sensitive tree without ever acting through a link (R-ACL).

Shipped as text and run as root on a managed host by ``baomi/fixes/sensitive_paths.py``:

    python3 -c "$PROGRAM" TOP owner USER GROUP               # chown entries owned otherwise
    python3 -c "$PROGRAM" TOP modes DIR_EXCESS FILE_EXCESS   # remove these bits (octal)
    python3 -c "$PROGRAM" TOP setgid                         # g+s on every directory

Why not ``find … -exec chown -h / chmod``: chmod follows links, and ``chown -h`` protects only
the last name of a path: the tree's owner (not trusted) can swap a directory, or a parent
directory, for a link between find's test and the change, so a root program becomes setgid
or a root file changes owner (both measured on a lab host). Here ``os.fwalk`` without
following links opens each directory itself and checks it is the one it listed (same device
and inode), so a swapped name is skipped, never entered; a directory is changed through its
own descriptor (``fchmod``/``fchown``). Any other entry is opened ``O_PATH|O_NOFOLLOW``
relative to its directory's descriptor and changed through that descriptor, so exactly the
inode that was inspected changes: owners with ``fchownat(fd, "", AT_EMPTY_PATH)`` (a link
itself, never its target), modes through ``/proc/self/fd/N`` and only when it is not a link
(Linux has no lchmod). A regular file with more than one hard link may be a
file from elsewhere linked in by the owner: it is left alone and named, and the run exits 1.
Stdlib only: the host has python3 and nothing of baomi.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import stat
import sys


def changed_mode(mode: int, is_dir: bool, action: str, dir_excess: int, file_excess: int) -> int:
    """The mode an entry should get: bits removed (``modes``) or setgid added (directories)."""
    if action == "setgid":
        return mode | stat.S_ISGID if is_dir else mode
    return mode & ~(dir_excess if is_dir else file_excess)


AT_EMPTY_PATH = 0x1000


def chown_fd(fd: int, uid: int, gid: int) -> None:
    """chown the inode an O_PATH descriptor holds (a link itself when it is one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def main(argv: list[str]) -> int:
    top, action, args = argv[1], argv[2] if len(argv) > 2 else "", argv[3:]
    if (action, len(args)) not in (("owner", 2), ("modes", 2), ("setgid", 0)):
        sys.stderr.write("usage: TOP owner USER GROUP | TOP modes DIR FILE | TOP setgid\n")
        return 2
    uid = gid = -1
    dir_excess = file_excess = 0
    if action == "owner":
        try:
            uid, gid = pwd.getpwnam(args[0]).pw_uid, grp.getgrnam(args[1]).gr_gid
        except KeyError as exc:
            sys.stderr.write(f"{top}: no such user or group {exc}\n")
            return 1
    elif action == "modes":
        dir_excess, file_excess = int(args[0], 8), int(args[1], 8)
    refused = 0
    for dirpath, _dirs, names, dirfd in os.fwalk(top, follow_symlinks=False):
        st = os.fstat(dirfd)
        if action == "owner":
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(dirfd, uid, gid)
        else:
            mode = stat.S_IMODE(st.st_mode)
            new = changed_mode(mode, True, action, dir_excess, file_excess)
            if new != mode:
                os.fchmod(dirfd, new)
        if action == "setgid":
            continue
        for name in names:
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dirfd)
            except FileNotFoundError:
                continue  # gone since it was listed
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    continue  # a directory swapped in since the listing: not ours to enter
                if action == "owner":
                    if (st.st_uid, st.st_gid) == (uid, gid):
                        continue
                else:
                    mode = stat.S_IMODE(st.st_mode)
                    new = changed_mode(mode, False, action, dir_excess, file_excess)
                    if stat.S_ISLNK(st.st_mode) or new == mode:
                        continue  # a link's own mode means nothing and cannot be changed
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    sys.stderr.write(f"{os.path.join(dirpath, name)}: {st.st_nlink} hard links "
                                     f"(maybe a file from elsewhere linked in); left alone\n")
                    refused += 1
                elif action == "owner":
                    chown_fd(fd, uid, gid)
                else:
                    os.chmod(f"/proc/self/fd/{fd}", new)
            finally:
                os.close(fd)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
