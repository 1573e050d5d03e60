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
