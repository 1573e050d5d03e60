"""R-BAK 每周二次备份 on a host: restic repository on the backup host, password escrowed,
systemd timer (or cron where there is no systemd) running baomi-backup weekly.

How the client's SSH key reaches the backup host in the same `baomi apply` run: (1) each
client generates its key, (2) each client's ``publish_client_key`` reads the public key at
execute time into ``_CLIENT_KEYS`` (one controller process), (3) the backup host's
``authorize_clients`` checks the repository account, makes every client's repository folder
and writes authorized_keys (one forced, append-only command per client key; keys of hosts
gone from the inventory revoked); (4) the clients then initialise their repositories.

Order across hosts: pyinfra orders operations as one DAG built from each host's own sequence
of operations; an operation that only one host has is not ordered against an operation that
only other hosts have.  So every step above is one operation that *every* host calls at the
same line (a no-op where it does not apply): each client's sequence then holds "authorize
clients" before "repository", and no backup-host operation floats after a client's
``restic init`` however many hosts there are (issue 11, item 12).  The client's known_hosts
holds the backup host's key as the controller pinned it (the inventory's
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


def known_hosts_text(remote: core.Remote, server: Host, keys: list[str]) -> str:
    names = ",".join(dict.fromkeys([remote.server, str(server.data.get("ssh_hostname")
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


class ScriptResult(FactBase[str]):
    """A read-only shell check's verdict: "" when it passes, else what it printed."""

    default = str

    def command(self, script: str) -> str:
        return f"out=$( ( {script}\n) 2>&1) && echo baomi-ok || printf '%s\\n' \"$out\""

    def process(self, output: list[str]) -> str:
        text = "\n".join(output).strip()
        return "" if text.endswith("baomi-ok") else text or "check failed"


@operation()
def authorize_clients(user: str, paths: dict[str, str]):  # type: ignore[no-untyped-def]
    """The repository account (checked), its shell, the clients' repository folders and
    authorized_keys: each client's key forced to serve its own repository append-only."""
    if not user:
        host.noop("not a backup host")
        return
    passwd = host.get_fact(FileText, path="/etc/passwd")
    entry = next((line.split(":") for line in passwd.splitlines()
                  if line.startswith(f"{user}:")), None)
    home = entry[5].rstrip("/") if entry is not None and len(entry) >= 7 else ""
    problem = host.get_fact(ScriptResult, script=fix.account_check(user, home or "/nonexistent"))
    if problem:
        raise OperationError(problem)
    keys_path = f"{home}/.ssh/authorized_keys"
    existing = host.get_fact(FileText, path=keys_path)
    content = fix.authorized_text(existing, _CLIENT_KEYS.get(host.name, {}), paths)
    ready = (content == existing and entry is not None and entry[6] == core.SHELL_PATH
             and host.get_fact(FileText, path=core.SHELL_PATH) == core.SHELL
             and host.get_fact(CommandSucceeds,
                               check=fix.repository_dirs_ready(user, sorted(paths.values()))))
    if ready:
        host.noop(f"account {user}, {len(paths)} repositories, {keys_path} in place")
        return
    yield fix.authorize_script(user, home, sorted(paths.values()), content)


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
                                 f"{repository} is escrowed in {store.where}: escrow it first "
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


def served_clients() -> tuple[str, dict[str, str]]:
    """(account, {client: repository folder}) of the inventory's clients whose repository
    this host holds; ("", {}) when it holds none."""
    user, paths = "", {}
    for client in inventory_hosts():
        if client.name == host.name:
            continue
        want = core.desired(HostContext.of(policy(), client.groups, client.name))
        if want.applies and want.remote and _serves(want.remote.server):
            user = user or want.remote.user
            paths[client.name] = want.remote.path
    return user, paths


@operation()
def client_key(active: bool):  # type: ignore[no-untyped-def]
    """The client's own SSH key for the backup host, generated on the host, root-only."""
    if not active:
        host.noop("not a client of a backup host")
    elif host.get_fact(CommandSucceeds, check=f"[ -s {core.KEY_FILE} ]"):
        host.noop(f"{core.KEY_FILE} present")
    else:
        yield fix.client_key_script(host.name)


def apply() -> None:
    want = core.desired(context())
    remote = want.remote
    served_user, served = served_clients()
    if not want.applies and not served_user:
        not_applicable(name=op_name(C, "backup"), reason=want.reason)
        return
    server = server_host(remote.server) if want.applies and remote else None
    if want.applies and remote and server is None:
        refuse(name=op_name(C, "backup host"),
               message=f"repository {want.repository}: backup host {remote.server!r} is not "
                       "in the inventory (add it, e.g. in group 'backup', or set "
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
    authorize_clients(name=op_name(C, "authorized clients"), user=served_user, paths=served)
    if not want.applies:
        return
    if remote and server is not None:
        keys = pinned_host_keys(server)
        if not keys:
            refuse(name=op_name(C, "backup host key"),
                   message=f"no pinned host key for {server.name} in the controller's "
                           "known_hosts (ssh_known_hosts_file); refusing to trust on first use")
            return
        put_text(C, core.KNOWN_HOSTS, known_hosts_text(remote, server, keys), mode="0600")
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
