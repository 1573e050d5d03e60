"""R-ACL, R-CLS fixes: the level's mark, owners and modes of the offending entries, setgid
directories.  Modes are fixed by *removing* the bits above the ceiling (``chmod g-w,o-rwx``)
from the entries that have them, never by forcing one mode, so stricter files stay stricter."""

from __future__ import annotations

import shlex

from baomi.controls.sensitive_paths import (
    MARK_ATTR,
    PathWant,
    marker_file,
    owner_predicate,
)
from baomi.fixes.install import install_file


def symbolic_removal(excess: int) -> str:
    """``chmod`` argument removing exactly the bits in ``excess``: 0o137 → ``u-x,g-wx,o-rwx``."""
    parts = []
    for who, shift in (("u", 6), ("g", 3), ("o", 0)):
        bits = (excess >> shift) & 0o7
        letters = "".join(c for c, b in (("r", 4), ("w", 2), ("x", 1)) if bits & b)
        if letters:
            parts.append(f"{who}-{letters}")
    return ",".join(parts)


def write_xattr(path: str, value: str) -> str:
    """Set the mark as an extended attribute: setfattr if installed, else python3."""
    q = shlex.quote(path)
    return (f"if command -v setfattr >/dev/null; then setfattr -n {MARK_ATTR} "
            f"-v {shlex.quote(value)} {q}; else python3 -c 'import os, sys; os.setxattr("
            f"sys.argv[1], sys.argv[2], sys.argv[3].encode())' {q} {MARK_ATTR} "
            f"{shlex.quote(value)}; fi")


def mark_script(want: PathWant, marking: str) -> str:
    """Write the level's mark: the xattr, or the marker file (the tree's owner, the level's file
    ceiling, installed atomically so a link planted at its name is replaced, never followed)."""
    if marking == "xattr":
        return write_xattr(want.path, want.mark)
    return install_file(marker_file(want), want.mark + "\n", mode=f"{want.max_file_mode:04o}",
                        owner=want.owner, group=want.group)


def ownership_script(want: PathWant) -> str:
    """chown only the entries (symlinks themselves, never their targets) owned otherwise."""
    return (owner_predicate(want) + f"; find {shlex.quote(want.path)} \\( \"$@\" \\) -exec "
            f"chown -h {shlex.quote(want.owner)}:{shlex.quote(want.group)} {{}} +")


def modes_script(want: PathWant) -> str:
    """Remove the permission bits above the level's ceilings from the entries that have them."""
    q = shlex.quote(want.path)
    return (f"find {q} ! -type l -type d -perm /{want.dir_excess:03o} -exec chmod "
            f"{symbolic_removal(want.dir_excess)} {{}} + && "
            f"find {q} ! -type l ! -type d -perm /{want.file_excess:03o} -exec chmod "
            f"{symbolic_removal(want.file_excess)} {{}} +")


def no_setgid_dir(want: PathWant) -> str:
    """find's test for directories under the path without the setgid bit."""
    return f"find {shlex.quote(want.path)} ! -type l -type d ! -perm -2000"


def setgid_script(want: PathWant) -> str:
    """setgid directories: files created later inherit the path's group instead of their
    creator's, so everyday work keeps the tree compliant (R-ACL)."""
    return f"{no_setgid_dir(want)} -exec chmod g+s {{}} +"
