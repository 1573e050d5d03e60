"""R-ACL, R-CLS fixes: the level's mark, owners and modes of the offending entries, setgid
directories.  Modes are fixed by *removing* the bits above the ceiling from the entries that
have them, never by forcing one mode, so stricter files stay stricter; every mode change goes
through baomi/hostside/tree_fix.py, which never acts through a link (owners too)."""

from __future__ import annotations

import shlex
from pathlib import Path

from baomi.controls.sensitive_paths import (
    MARK_ATTR,
    PathWant,
    marker_file,
)
from baomi.fixes.install import install_file

# The host-side program that changes owners and modes without following links (its docstring
# says how).
TREE_FIX = (Path(__file__).parents[1] / "hostside" / "tree_fix.py").read_text(encoding="utf-8")


def tree_fix(path: str, *args: str) -> str:
    return " ".join(["python3", "-c", shlex.quote(TREE_FIX), shlex.quote(path),
                     *map(shlex.quote, args)])


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
    """chown the entries owned otherwise (a link itself, never its target), never through a
    directory swapped for a link while it runs."""
    return tree_fix(want.path, "owner", want.owner, want.group)


def modes_script(want: PathWant) -> str:
    """Remove the permission bits above the level's ceilings from the entries that have them,
    never through a link (not even a directory swapped for one while it runs)."""
    return tree_fix(want.path, "modes", f"{want.dir_excess:03o}", f"{want.file_excess:03o}")


def no_setgid_dir(want: PathWant) -> str:
    """find's test for directories under the path without the setgid bit."""
    return f"find {shlex.quote(want.path)} ! -type l -type d ! -perm -2000"


def setgid_script(want: PathWant) -> str:
    """setgid directories: files created later inherit the path's group instead of their
    creator's, so everyday work keeps the tree compliant (R-ACL). Each directory is changed
    through its own descriptor: one swapped for a link is skipped, its target untouched."""
    return tree_fix(want.path, "setgid")
