"""What every baomi service shares on a host: the systemd confinement lines, and for hosts
without systemd the head of the supervisor loop and the test that it runs.

Pure text: the collector's and the agent's units and supervisors differ in who they run as
and what they may write, not in these lines.
"""

from __future__ import annotations

# After NoNewPrivileges and the file-system protections, which differ per service.
CONFINED = ("ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes", "RestrictRealtime=yes", "LockPersonality=yes")
INSTALL = ("", "[Install]", "WantedBy=multi-user.target", "")


def supervisor_head(header: str, what: str, pidfile: str) -> list[str]:
    """The first lines of a supervisor script: it records its PID, files it makes are private."""
    return ["#!/bin/sh", header.rstrip("\n"),
            f"# No systemd on this host: this loop restarts the {what} whenever it exits.",
            "umask 077", f"echo $$ > {pidfile}"]


def supervisor_running(pidfile: str, script: str) -> str:
    """Shell test: the PID in PIDFILE is alive and runs SCRIPT."""
    return (f"pid=$(cat {pidfile} 2>/dev/null) && kill -0 \"$pid\" 2>/dev/null && "
            f"tr '\\0' ' ' < /proc/$pid/cmdline | grep -q {script}")
