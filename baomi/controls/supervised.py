"""What every baomi service shares on a host: the systemd confinement lines, and for hosts
without systemd the head of the supervisor loop and the test that it runs.

Pure text: the collector's and the agent's units and supervisors differ in who they run as
and what they may write, not in these lines.
"""

from __future__ import annotations

from baomi.controls.contract import Check
from baomi.findings import Finding

# After NoNewPrivileges and the file-system protections, which differ per service.
CONFINED = ("ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes", "RestrictRealtime=yes", "LockPersonality=yes")
INSTALL = ("", "[Install]", "WantedBy=multi-user.target", "")
# A service that talks over the network and writes only its ReadWritePaths (the collector,
# and the regular audit that runs from the collector host and SSHes out).
NETWORK_SANDBOX = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                   "PrivateTmp=yes", "PrivateDevices=yes", *CONFINED,
                   "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX")


def supervisor_head(header: str, what: str, pidfile: str) -> list[str]:
    """The first lines of a supervisor script: it records its PID, files it makes are private."""
    return ["#!/bin/sh", header.rstrip("\n"),
            f"# No systemd on this host: this loop restarts the {what} whenever it exits.",
            "umask 077", f"echo $$ > {pidfile}"]


def supervisor_running(pidfile: str, script: str) -> str:
    """Shell test: the PID in PIDFILE is alive and runs SCRIPT."""
    return (f"pid=$(cat {pidfile} 2>/dev/null) && kill -0 \"$pid\" 2>/dev/null && "
            f"tr '\\0' ' ' < /proc/$pid/cmdline | grep -q {script}")


def unit_file_finding(check: Check, path: str, want: str, seen: str | None) -> Finding | None:
    """The installed unit file differs from baomi's (missing or edited), or None."""
    if seen == want:
        return None
    return check.finding(path, "the baomi unit", "missing" if seen is None else "edited content",
                         "medium")
