"""R-BAK 每周二次备份 on a host: restic repository on the backup host, password escrowed,
systemd timer (or cron where there is no systemd) running baomi-backup weekly.

How the client's SSH key reaches the backup host in the same `baomi apply` run: pyinfra runs
one operation on every host before the next operation, in the order of the lines below.  So
(1) each client generates its key, (2) each client's ``publish_client_key`` reads the public
key at execute time into ``_CLIENT_KEYS`` (one controller process), (3) the backup host's
``authorize_clients`` writes authorized_keys from it, keeping entries of clients that are not
in this run (``--limit``); (4) the clients then initialise their repositories.  The client's
known_hosts holds the backup host's key as the controller pinned it (the inventory's
``ssh_known_hosts_file``, read with ``ssh-keygen -F``), never trust-on-first-use.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess

from pyinfra import host
from pyinfra.api import FactBase, OperationError, operation
from pyinfra.api.command import FunctionCommand
from pyinfra.api.host import Host
from pyinfra.operations import files

from baomi.controller.escrow import EscrowError, EscrowStore
from baomi.controls import backup as core
from baomi.controls.contract import HostContext
from baomi.deploy.common import (
    CommandSucceeds,
    context,
    op_name,
    policy,
    put_secret,
    put_text,
    shell_if,
)
from baomi.fixes import backup as fix

C = core.CONTROL.name
_CLIENT_KEYS: dict[str, dict[str, str]] = {}  # backup host → {client: "type key"}


class FileText(FactBase[str]):
    default = str

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return "\n".join(output) + ("\n" if output else "")


class FileSha256(FactBase[str]):
    """The sha256 of a root-only secret file (the secret itself never leaves the host)."""

    default = str

    def command(self, path: str) -> str:
        return f"[ -s {shlex.quote(path)} ] && sha256sum {shlex.quote(path)} || true"

    def process(self, output: list[str]) -> str:
        return output[0].split()[0] if output and output[0].strip() else ""


def inventory_hosts() -> list[Host]:
    return list(host.state.inventory)


def server_host(server: str) -> Host | None:
    """The inventory host a repository URL names (by inventory name or ssh_hostname)."""
    for candidate in inventory_hosts():
        if server in (candidate.name, candidate.data.get("ssh_hostname")):
            return candidate
    return None


def _serves(server: str) -> bool:
    """Whether the current host is the backup host a repository URL names."""
    found = server_host(server)
    return found is not None and found.name == host.name


def pinned_host_keys(server: Host) -> list[str]:
    """The backup host's keys as the controller pinned them ("type key" lines)."""
    known = str(server.data.get("ssh_known_hosts_file")
                or os.path.expanduser("~/.ssh/known_hosts"))
    lines: set[str] = set()
    for name in {server.name, str(server.data.get("ssh_hostname") or server.name)}:
        try:
            out = subprocess.run(["ssh-keygen", "-F", name, "-f", known], capture_output=True,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                lines.add(f"{fields[1]} {fields[2]}")
    return sorted(lines)


def known_hosts_text(sftp: core.Sftp, server: Host, keys: list[str]) -> str:
    names = ",".join(dict.fromkeys([sftp.server, str(server.data.get("ssh_hostname")
                                                     or server.name)]))
    return "".join(f"{names} {key}\n" for key in keys)


@operation()
def not_applicable(reason: str):  # type: ignore[no-untyped-def]
    """Reported as "unchanged" with its reason, instead of no row at all."""
    host.noop(reason)
    yield from ()


@operation()
def refuse(message: str):  # type: ignore[no-untyped-def]
    if message:
        raise OperationError(message)
    yield from ()


@operation()
def publish_client_key(server: str):  # type: ignore[no-untyped-def]
    """Hand this client's public key to the backup host's operation that runs next."""
    key = host.get_fact(FileText, path=core.KEY_FILE + ".pub").split()
    if len(key) >= 2:
        _CLIENT_KEYS.setdefault(server, {})[host.name] = f"{key[0]} {key[1]}"
        host.noop(f"public key handed to {server}")
    else:
        host.noop("no key yet (dry run)")
    yield from ()  # reads only; a generator as pyinfra expects


@operation()
def authorize_clients(user: str):  # type: ignore[no-untyped-def]
    """authorized_keys of the SFTP account: each client's key, restricted to internal-sftp."""
    if not user:
        host.noop("not a backup host")
        return
    passwd = host.get_fact(FileText, path="/etc/passwd")
    entry = next((line.split(":") for line in passwd.splitlines()
                  if line.startswith(f"{user}:")), None)
    if entry is None or len(entry) < 7:
        raise OperationError(f"backup host {host.name}: no account {user!r} for the "
                             "repositories (create it, shell /usr/sbin/nologin)")
    path = f"{entry[5].rstrip('/')}/.ssh/authorized_keys"
    existing = host.get_fact(FileText, path=path)
    content = fix.merge_authorized(existing, _CLIENT_KEYS.get(host.name, {}))
    if content == existing:
        host.noop(f"{path} authorises the clients")
        return
    yield fix.authorized_keys_script(path, content)


def _escrow(client: str, repository: str, secret: str) -> bool:
    EscrowStore.default().put(core.ESCROW_KIND, client, repository, secret,
                              {"repository": repository})
    return True


@operation()
def repository_password(repository: str):  # type: ignore[no-untyped-def]
    """Generate the password on the controller, escrow it (sealed: the controller cannot read
    it back), then write it root 0600. A re-apply compares the escrowed ``secret_sha256``."""
    store = EscrowStore.default()
    try:
        escrowed = store.latest(core.ESCROW_KIND, host.name, repository)
        if escrowed is None:
            store.recipient()  # no key pair yet: stop before generating anything
    except EscrowError as exc:
        raise OperationError(f"escrow store: {exc}") from None
    digest = host.get_fact(FileSha256, path=core.PASSWORD_FILE)
    if digest:
        if escrowed is None:
            raise OperationError(f"{core.PASSWORD_FILE} exists but no password for "
                                 f"{repository} is escrowed in {store.dir}: escrow it first "
                                 "(or point BAOMI_ESCROW_DIR at the store that has it)")
        if escrowed.get("secret_sha256") != digest:
            raise OperationError(f"{core.PASSWORD_FILE} differs from the password escrowed "
                                 f"on {escrowed['created']} for {repository}; not overwriting it")
        host.noop(f"repository password in place (escrowed {escrowed['created']})")
        return
    if escrowed is not None:
        # Host rebuilt: its repository's password comes back only with the offline key.
        if not host.state.is_executing:
            yield "echo " + shlex.quote(f"would restore the password escrowed for {repository}")
            return
        try:
            secret = store.retrieve(core.ESCROW_KIND, host.name, repository,
                                    reason=f"{host.name} rebuilt: restore {core.PASSWORD_FILE}"
                                    " (baomi apply)").secret
        except EscrowError as exc:
            raise OperationError(f"{host.name} has no {core.PASSWORD_FILE} but {repository}'s "
                                 f"password was escrowed on {escrowed['created']}: {exc}") \
                from None
    else:
        secret = secrets.token_urlsafe(32)
        yield FunctionCommand(_escrow, (host.name, repository, secret), {})
    temp = f"{core.PASSWORD_FILE}.baomi-new"
    yield from put_secret(temp, secret)  # through a 0700 folder, never on a command line
    yield fix.place_secret_script(temp, core.PASSWORD_FILE)


@operation()
def systemd_timer():  # type: ignore[no-untyped-def]
    """Reload changed units, enable and start the timer."""
    reload = host.get_fact(CommandSucceeds, check=fix.TIMER_NEEDS_RELOAD)
    ready = host.get_fact(CommandSucceeds, check=fix.TIMER_READY)
    if reload:
        yield fix.RELOAD_TIMER
    if not ready:
        yield fix.ENABLE_TIMER
    if ready and not reload:
        host.noop(f"{core.TIMER} enabled and active")


def repository_dirs(hosts: list[Host]) -> list[str]:
    """Repository directories on this backup host for the clients that use it."""
    out = []
    for client in hosts:
        if client.name == host.name:
            continue
        want = core.desired(HostContext.of(policy(), client.groups, client.name))
        if want.applies and want.sftp and _serves(want.sftp.server):
            out.append(want.sftp.path)
    return sorted(out)


@operation()
def client_key(active: bool):  # type: ignore[no-untyped-def]
    """The client's own SSH key for the backup host, generated on the host, root-only."""
    if not active:
        host.noop("not a backup client over SFTP")
    elif host.get_fact(CommandSucceeds, check=f"[ -s {core.KEY_FILE} ]"):
        host.noop(f"{core.KEY_FILE} present")
    else:
        yield fix.client_key_script(host.name)


def apply() -> None:
    want = core.desired(context())
    sftp = want.sftp
    clients = (core.desired(HostContext.of(policy(), h.groups, h.name))
               for h in inventory_hosts() if h.name != host.name)
    served_user = next((w.sftp.user for w in clients
                        if w.applies and w.sftp and _serves(w.sftp.server)), None)
    if not want.applies and served_user is None:
        not_applicable(name=op_name(C, "backup"), reason=want.reason)
        return
    server = server_host(sftp.server) if want.applies and sftp else None
    if want.applies and sftp and server is None:
        refuse(name=op_name(C, "backup host"),
               message=f"repository {want.repository}: backup host {sftp.server!r} is not in "
                       "the inventory (add it, e.g. in group 'backup', or set "
                       "backup.repository to a local path)")
        return
    if want.applies:
        files.directory(name=op_name(C, core.CONF_DIR), path=core.CONF_DIR, user="root",
                        group="root", mode="0700")
    # The three steps every host runs in this order (noop where they do not apply): pyinfra
    # finishes an operation on all hosts before the next, so keys are generated, handed over
    # and authorised before any client opens its repository below.
    client = want.applies and server is not None
    client_key(name=op_name(C, "client ssh key"), active=client)
    publish_client_key(name=op_name(C, "publish client key"),
                       server=server.name if server is not None and client else "")
    authorize_clients(name=op_name(C, "authorized clients"), user=served_user or "")
    if served_user is not None:
        for path in repository_dirs(inventory_hosts()):
            shell_if(name=op_name(C, f"repository directory {path}"),
                     check=fix.repository_dir_check(path, served_user),
                     command=fix.repository_dir_script(path, served_user),
                     reason=f"{path} belongs to {served_user}, mode 0700")
    if not want.applies:
        return
    if sftp and server is not None:
        keys = pinned_host_keys(server)
        if not keys:
            refuse(name=op_name(C, "backup host key"),
                   message=f"no pinned host key for {server.name} in the controller's "
                           "known_hosts (ssh_known_hosts_file); refusing to trust on first use")
            return
        put_text(C, core.KNOWN_HOSTS, known_hosts_text(sftp, server, keys), mode="0600")
    repository_password(name=op_name(C, f"repository password {core.PASSWORD_FILE}"),
                        repository=want.repository)
    put_text(C, core.CONFIG_FILE, want.config, mode="0600")
    files.directory(name=op_name(C, "/usr/local/sbin"), path="/usr/local/sbin")
    put_text(C, core.HELPER_PATH, want.helper, mode="0700")
    if host.get_fact(CommandSucceeds, check="[ -d /run/systemd/system ]"):
        put_text(C, core.SERVICE_FILE, want.service)
        put_text(C, core.TIMER_FILE, want.timer)
        systemd_timer(name=op_name(C, f"{core.TIMER} enabled"))
    else:
        put_text(C, core.CRON_FILE, want.cron)
        shell_if(name=op_name(C, "cron daemon"), check=fix.CRON_RUNNING, command=fix.START_CRON,
                 reason="cron is running (no systemd on this host)")
    shell_if(name=op_name(C, "repository"), check=fix.REPOSITORY_OPENS,
             command=fix.INIT_REPOSITORY, reason="repository opens")
