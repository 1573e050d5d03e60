"""Change modes across a sensitive tree without ever acting through a link (R-ACL fixes).

Shipped as text and run as root on a managed host by ``baomi/fixes/sensitive_paths.py``:

    python3 -c "$PROGRAM" TOP modes DIR_EXCESS FILE_EXCESS   # remove these bits (octal)
    python3 -c "$PROGRAM" TOP setgid                         # g+s on every directory

Why not ``find … -exec chmod``: chmod follows links, and the tree's owner (not trusted) can
swap a directory for a link to a root program between find's test and chmod, so the program
would become setgid (measured on a lab host). Here ``os.fwalk(follow_symlinks=False)`` opens
each directory itself and checks it is the directory it listed (same device and inode), so a
swapped name is skipped, never entered; a directory is changed through its own descriptor
(``fchmod``). Any other entry is opened ``O_PATH|O_NOFOLLOW`` relative to its directory's
descriptor and changed through ``/proc/self/fd/N`` only when that descriptor is not a link
(Linux has no lchmod). A regular file with more than one hard link may be another file of the
system linked in by the owner: it is left alone and named, and the run exits 1.
Stdlib only: the host has python3 and nothing of baomi.
"""

from __future__ import annotations

import os
import stat
import sys


def changed_mode(mode: int, is_dir: bool, action: str, dir_excess: int, file_excess: int) -> int:
    """The mode an entry should get: bits removed (``modes``) or setgid added (directories)."""
    if action == "setgid":
        return mode | stat.S_ISGID if is_dir else mode
    return mode & ~(dir_excess if is_dir else file_excess)


def main(argv: list[str]) -> int:
    top, action = argv[1], argv[2]
    if action not in ("modes", "setgid") or (action == "modes") != (len(argv) == 5):
        sys.stderr.write("usage: TOP modes DIR_EXCESS FILE_EXCESS | TOP setgid\n")
        return 2
    dir_excess, file_excess = (int(argv[3], 8), int(argv[4], 8)) if action == "modes" else (0, 0)
    refused = 0
    for dirpath, _dirs, names, dirfd in os.fwalk(top, follow_symlinks=False):
        mode = stat.S_IMODE(os.fstat(dirfd).st_mode)
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
                if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    continue  # a link is never changed; a directory swapped in is not listed
                mode = stat.S_IMODE(st.st_mode)
                new = changed_mode(mode, False, action, dir_excess, file_excess)
                if new == mode:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    sys.stderr.write(f"{os.path.join(dirpath, name)}: {st.st_nlink} hard links "
                                     "(maybe a file from elsewhere linked in); mode left alone\n")
                    refused += 1
                    continue
                os.chmod(f"/proc/self/fd/{fd}", new)
            finally:
                os.close(fd)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
