"""The scheduled virus scan: infected files moved to the root-only quarantine, never via a link.

Installed as ``/usr/local/sbin/baomi-av-scan`` by ``deploy/antivirus.py`` and run as root by
its timer (or cron), by hand, or by the lab tests::

    baomi-av-scan QUARANTINE LOG DATABASE PATH...

Why this is not ``clamscan --move``: a local user owns files in the sensitive paths and can
replace a detected file by a link (to ``/etc/shadow``, to another user's file) between the
scan and the move, or name a file so that ``clamscan``'s one-line-per-file report reads as a
detection of some other path.  Here the report only *nominates* a path; the path is then
opened one component at a time with ``O_NOFOLLOW`` relative to the previous folder, the file
must be a regular file, its *content read from that descriptor* is scanned again (``clamscan
-`` on stdin), copied into the quarantine (``O_EXCL``, 0600, root), and the name is unlinked
only if the folder entry is still that same inode.  A link is never followed, never moved,
never deleted; a nomination that is not confirmed is recorded, not acted on.

Each detection is one JSON line in LOG (0600, root) and one syslog line (facility auth,
tag ``baomi-antivirus``) that log forwarding carries off the host; the antivirus check reads
LOG (``antivirus.detections``, clause R-SEC).  Exit 0: clean, 1: detections, 2: errors.

Stdlib only: the host has python3 and nothing of baomi.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import syslog
import time

CLAMSCAN = "/usr/bin/clamscan"


class Refused(Exception):
    """The nominated path cannot be acted on safely; the message says why."""


def parts(path: str) -> list[str]:
    names = [p for p in path.split("/") if p]
    if not path.startswith("/") or any(p in (".", "..") for p in names) or not names:
        raise Refused("not a plain absolute path")
    return names


def open_parent(path: str) -> tuple[int, str]:
    """The folder holding ``path``, opened without following any link on the way."""
    names = parts(path)
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        for name in names[:-1]:
            nxt = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        raise Refused(f"a folder on the way is a link or gone ({exc.strerror})") from None
    return fd, names[-1]


def confirm(fd: int, database: str) -> str | None:
    """Scan the bytes behind ``fd`` again; the signature name, or None when clean."""
    os.lseek(fd, 0, os.SEEK_SET)
    out = subprocess.run([CLAMSCAN, "--no-summary", f"--database={database}", "-"],
                         stdin=fd, capture_output=True, text=True, timeout=600, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("stdin: ") and line.endswith(" FOUND"):
            return line[len("stdin: "):-len(" FOUND")]
    return None


def quarantine_dir(path: str) -> int:
    """The quarantine folder: made 0700 root if absent; a link or anything else is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if st.st_uid != 0:
        os.close(fd)
        raise Refused(f"quarantine {path} is not root's (uid {st.st_uid})")
    os.fchmod(fd, 0o700)
    return fd


def take(path: str, database: str, qfd: int) -> dict[str, object]:
    """Move one nominated file into the quarantine; what happened, for the record."""
    parent, name = open_parent(path)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            raise Refused(f"not opened: a link or gone ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused("not a regular file")
            signature = confirm(fd, database)
            if signature is None:
                raise Refused("the file's content is clean on a second scan")
            digest = hashlib.sha256()
            os.lseek(fd, 0, os.SEEK_SET)
            stored = f"{int(time.time())}-{st.st_ino}-{os.urandom(4).hex()}"
            out = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                          dir_fd=qfd)
            try:
                while chunk := os.read(fd, 1 << 20):
                    digest.update(chunk)
                    os.write(out, chunk)
                os.fsync(out)
            finally:
                os.close(out)
            now = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise Refused(f"replaced during the move: left in place, copy kept as {stored}")
            os.unlink(name, dir_fd=parent)
            return {"action": "quarantined", "signature": signature, "quarantine": stored,
                    "sha256": digest.hexdigest(), "size": st.st_size, "uid": st.st_uid}
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def nominated(report: str, roots: list[str]) -> list[tuple[str, str]]:
    """(path, signature) from ``clamscan -i`` lines ``PATH: SIGNATURE FOUND``; a path that is
    not under a root (a name with a newline splits its line) comes back as ``""``."""
    out = []
    for line in report.splitlines():
        if not line.endswith(" FOUND") or ": " not in line:
            continue
        path, _, signature = line[:-len(" FOUND")].rpartition(": ")
        inside = any(path.startswith(r.rstrip("/") + "/") for r in roots)
        out.append((path if inside else "", signature))
    return out


def record(log: str, entry: dict[str, object]) -> None:
    line = json.dumps({"time": int(time.time()), "clause": "R-SEC", **entry},
                      ensure_ascii=True, sort_keys=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    syslog.openlog("baomi-antivirus", 0, syslog.LOG_AUTH)
    syslog.syslog(syslog.LOG_ALERT, line)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        sys.stderr.write("usage: baomi-av-scan QUARANTINE LOG DATABASE PATH...\n")
        return 2
    quarantine, log, database, *paths = argv
    roots = [p for p in paths if os.path.isdir(p) and not os.path.islink(p)]
    if not roots:
        return 0
    os.umask(0o077)
    try:
        qfd = quarantine_dir(quarantine)
    except (Refused, OSError) as exc:
        sys.stderr.write(f"baomi-av-scan: quarantine {quarantine}: {exc}\n")
        return 2
    scan = subprocess.run([CLAMSCAN, "-r", "-i", "--no-summary", f"--database={database}",
                           "--follow-dir-symlinks=0", "--follow-file-symlinks=0", "--", *roots],
                          capture_output=True, text=True, errors="replace", timeout=86_400,
                          check=False)
    if scan.returncode not in (0, 1):
        sys.stderr.write(scan.stderr[-2000:])
        return 2
    found = 0
    for path, signature in nominated(scan.stdout, roots):
        if not path:
            record(log, {"path": "", "signature": signature, "action": "not moved",
                         "reason": "the reported name is not a path under the scanned folders "
                                   "(a newline in a file name?)"})
            found += 1
            continue
        try:
            entry = {"path": path, **take(path, database, qfd)}
            found += 1
        except (Refused, OSError) as exc:
            entry = {"path": path, "signature": signature, "action": "not moved",
                     "reason": str(exc)}
            found += "clean" not in str(exc)
        record(log, entry)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
