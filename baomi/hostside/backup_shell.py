#!/usr/bin/python3
# Managed by baomi: R-BAK 每周二次备份. Local edits are reverted.
"""baomi-repository-shell: the login shell of the backup host's repository account.

sshd runs a key's forced command as ``SHELL -c COMMAND``, so the account needs a shell; this
one runs nothing but ``serve-restic PATH`` (the forced command baomi writes for each client's
key in the root-owned authorized_keys) as ``rclone serve restic --stdio --append-only PATH``:
the client can read its repository and add to it, never delete or overwrite a file (rclone
refuses with 403, lock files excepted).  No interactive use, no other command, no path that is
not a folder of this account's own.
"""

import os
import re
import stat
import sys

RCLONE = "/usr/bin/rclone"


def refuse(why: str) -> int:
    sys.stderr.write(f"baomi-repository-shell: {why}\n")
    return 1


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "-c":
        return refuse("this account only serves restic repositories (no login)")
    match = re.fullmatch(r"serve-restic (/[A-Za-z0-9_.@/-]+)", argv[2])
    if match is None:
        return refuse("only a client's forced command is run here")
    path = match[1]
    if os.path.normpath(path) != path or os.path.realpath(path) != path:
        return refuse(f"{path} is not a plain path (.., // or a link)")
    try:
        st = os.lstat(path)
    except OSError as exc:
        return refuse(f"{path}: {exc.strerror}")
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return refuse(f"{path} is not a folder of this account")
    os.environ["RCLONE_CONFIG"] = "/dev/null"  # no configuration file to find or write
    # S606: exec of a fixed path, no shell
    os.execv(RCLONE, [RCLONE, "serve", "restic", "--stdio", "--append-only", path])  # noqa: S606
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
