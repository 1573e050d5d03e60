"""What every deploy module shares: the policy, the host's groups, facts, small operations."""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Iterator
from functools import cache
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.api.arguments import ConnectorArguments
from pyinfra.api.command import PyinfraCommand
from pyinfra.operations import files

from baomi.controls.contract import HostContext
from baomi.controls.registry import BASELINE
from baomi.policy import Policy, PolicyError, default_policy_path, load

ALL_CONTROLS = BASELINE


@cache
def _load(path: str) -> Policy:
    try:
        return load(path)
    except PolicyError as exc:
        # Plain pyinfra runs reach here; `baomi apply` validated the policy before connecting.
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None


def policy() -> Policy:
    """The policy named by host data ``baomi_policy``, else as every command finds it."""
    path = host.data.get("baomi_policy") or default_policy_path()
    return _load(str(path))


def selected(control: str) -> bool:
    """``baomi apply --only`` passes BAOMI_ONLY=a,b; no value means every control."""
    only = os.environ.get("BAOMI_ONLY", "")
    return not only or control in only.split(",")


def groups() -> set[str]:
    return set(host.groups)


def context(**inputs: object) -> HostContext:
    """The control contract's view of the host pyinfra is preparing."""
    return HostContext.of(policy(), host.groups, host.name, **inputs)


def op_name(control: str, what: str) -> str:
    return f"[{control}] {what}"


class Observation(FactBase[str]):
    """Runs a control's read-only observe script; the control's ``parse`` reads the output."""

    def command(self, script: str) -> str:
        return f"sh -c {shlex.quote(script)}"

    def process(self, output: list[str]) -> str:
        return "\n".join(output) + "\n"


def put_text(control: str, path: str, content: str, mode: str = "0644", user: str = "root",
             group: str = "root") -> object:
    """Upload exact file contents (pyinfra compares checksums, so re-runs change nothing)."""
    return files.put(name=op_name(control, f"{path}"), src=StringIO(content), dest=path,
                     user=user, group=group, mode=mode)


# Connector arguments that run a command as the SSH user itself (no sudo/su/doas/dzdo).
AS_SSH_USER: ConnectorArguments = {"_sudo": False, "_su_user": "", "_doas": False,
                                   "_dzdo": False}


def put_secret(path: str, secret: str) -> Iterator[PyinfraCommand | str]:
    """Commands (for an operation to ``yield from``) placing ``secret`` at ``path``, root 0600.

    Why not a plain upload: under ``_sudo`` pyinfra sends a file as the SSH user to the
    predictable ``/tmp/pyinfra-<sha1 of the path>`` (mode 0644 by sftp-server's umask), then
    copies it as root, so any local user can read (or pre-create) it. Here the SSH user makes
    a fresh directory itself, mode 0700, under a name drawn on the controller (``mkdir``
    without ``-p`` fails if anything, a link included, already has that name); the secret is
    uploaded into it with no sudo, then root copies it with ``install`` (the target is
    unlinked first and created 0600 root:root under umask 077, a link there is replaced, not
    followed) and the directory goes however the copy ends. The secret is never on a
    command line. Root without sudo takes the same steps.
    """
    # S108: random name, mkdir fails if planted
    staging = f"/tmp/baomi-secret-{secrets.token_hex(16)}"  # noqa: S108
    upload = f"{staging}/secret"
    yield StringCommand("mkdir", "-m", "0700", "--", staging, **AS_SSH_USER)
    yield FileUploadCommand(StringIO(secret), upload, **AS_SSH_USER)
    yield (f"trap 'rm -rf -- {staging}' EXIT; umask 077 && "
           f"install -m 0600 -o root -g root -T -- {upload} {shlex.quote(path)}")


@operation()
def nothing_to_do(reason: str):  # type: ignore[no-untyped-def]
    """Nothing to do on this host: a row "unchanged" with its reason, instead of no row at all
    (the one spelling for every control)."""
    host.noop(reason)
    yield from ()


@operation()
def shell_if(check: str, command: str, reason: str):  # type: ignore[no-untyped-def]
    """Run ``command`` unless ``check`` (a read-only shell test) already succeeds."""
    if host.get_fact(CommandSucceeds, check=check):
        host.noop(reason)
        return
    yield command


@operation()
def refuse(message: str):  # type: ignore[no-untyped-def]
    """Fail this host's operation with MESSAGE (one line in its row), e.g. a host that cannot
    take what the deploy would put there; other hosts go on."""
    raise OperationError(message)
    yield  # a generator, as pyinfra expects


class CommandSucceeds(FactBase[bool]):
    default = bool

    def command(self, check: str) -> str:
        return f"if {check}; then echo yes; else echo no; fi"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"


def unit_enabled_and_active(control: str, unit: str) -> object:
    """A systemd unit enabled and running (reloads unit files first)."""
    return shell_if(name=op_name(control, f"{unit} enabled and active"),
                    check=f"systemctl is-enabled -q {unit} && systemctl is-active -q {unit}",
                    command=f"systemctl daemon-reload && systemctl enable --now {unit}",
                    reason=f"{unit} enabled and active")
