"""R-TLS fixes: neutralise sshd lines that would override baomi's drop-in."""

from __future__ import annotations

import shlex

from baomi.controls.ssh import Desired, Observed, overriding


def neutralise_script(seen: Observed, want: Desired) -> str:
    """Comment out the lines read before our drop-in that set one of our keywords.

    Nothing else in those files changes; the caller validates the whole config with ``sshd -t``
    before any reload.
    """
    commands = []
    for key in want.sshd.values:
        for s in overriding(seen, key):
            commands.append(f"sed -i '{s.line}s/^/# disabled by baomi (R-TLS): /' "
                            f"{shlex.quote(s.path)}")
    return "; ".join(dict.fromkeys(commands))
