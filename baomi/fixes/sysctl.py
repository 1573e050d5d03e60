"""sysctl.d files (R-SEC's kernel settings, R-ACL's core dumps): install, then load live only
where the host has a kernel of its own (see :mod:`baomi.sysctl`: a lab container must never
change the lab machine's kernel)."""

from __future__ import annotations

import shlex

from baomi.fixes.install import install_file
from baomi.sysctl import OWN_KERNEL


def install_sysctl(path: str, content: str) -> str:
    """Install the file; on a host with its own kernel load it at once (``sysctl -p``: the
    file is read after every other drop-in, so the outcome equals ``sysctl --system``'s but
    for the overrides the check names)."""
    return install_file(path, content,
                        then=f"if {OWN_KERNEL}; then sysctl -q -p {shlex.quote(path)}; fi")


def disable_lines(lines: list[tuple[str, int]], clause: str) -> str:
    """Comment out lines of other files that defeat baomi's (an ``/etc/sysctl.conf`` value read
    after our file, a limits line raising the core limit).  Only files under ``/etc`` are
    edited: a package's file in ``/usr/lib`` is named by the check, never rewritten."""
    return "; ".join(dict.fromkeys(
        f"sed -i '{n}s/^/# disabled by baomi ({clause}): /' {shlex.quote(path)}"
        for path, n in lines if path.startswith("/etc/")))
