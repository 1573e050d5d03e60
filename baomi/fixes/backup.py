"""R-BAK fixes: the backup host's repository account, authorised client keys and repository
folders, the client's key, password, schedule and repository.

The repository password is the one file here that does not go through
:func:`baomi.fixes.install.install_file`: install_file carries the content inside the script,
and a secret must never be on a command line (a local user of the host could read it from the
process list).  The deploy sends it with ``deploy/common.put_secret`` (through a 0700 folder
of the SSH user's, installed root 0600) and :func:`place_secret_script` renames it into place;
the operator's prune gets it the same way into a file under /run that :func:`prune_script`
removes.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from baomi.controls.backup import (
    HELPER,
    HELPER_PATH,
    KEY_FILE,
    SERVICE,
    SHELL,
    SHELL_PATH,
    TIMER,
    forced_command,
)
from baomi.fixes.install import install_file

MANAGED = "baomi-backup@"  # the comment that marks the client keys baomi manages
# Shells an account for the repositories may come with (baomi then gives it SHELL_PATH).
NO_LOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def authorized_line(client: str, key: str, path: str) -> str:
    """A client's key: no pty, no forwarding, and only its own repository, append-only."""
    return f'restrict,command="{forced_command(path)}" {key} {MANAGED}{client}\n'


def managed_keys(existing: str) -> dict[str, str]:
    """client → "type key" of the entries baomi wrote (options may hold spaces: read from
    the end of the line)."""
    out = {}
    for line in existing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[-1].startswith(MANAGED):
            out[fields[-1].removeprefix(MANAGED)] = f"{fields[-3]} {fields[-2]}"
    return out


def authorized_text(existing: str, published: dict[str, str], paths: dict[str, str]) -> str:
    """One entry per client of the inventory (``paths``: client → its repository): the key it
    published in this run, else the one already authorised (a client outside ``--limit``).
    Entries of hosts gone from the inventory are revoked, and so is any line baomi did not
    write: the account exists for the repositories only."""
    keys = {**managed_keys(existing), **published}
    return "".join(authorized_line(c, keys[c], paths[c]) for c in sorted(paths) if c in keys)


def account_check(user: str, home: str) -> str:
    """sh: refuse (exit 1, one line naming account and host) an account unfit to hold the
    repositories, or whose home is no longer ``home``; sets $uid and $shell.  Run on the
    backup host right before anything is authorised, in the same script."""
    u, h = shlex.quote(user), shlex.quote(home)
    shells = "|".join((*NO_LOGIN, SHELL_PATH))
    return "\n".join([
        'refuse() { echo "backup host $(uname -n): $*" >&2; exit 1; }',
        f"entry=$(getent passwd {u}) || refuse 'no account {user} for the repositories "
        "(create it with no login shell and a home it cannot write)'",
        "uid=$(printf %s \"$entry\" | cut -d: -f3)",
        "home=$(printf %s \"$entry\" | cut -d: -f6)",
        "shell=$(printf %s \"$entry\" | cut -d: -f7)",
        f"[ \"$uid\" != 0 ] || refuse 'account {user} has UID 0: its clients would be root here'",
        f'case "$shell" in {shells}) ;; *) refuse "account {user} has login shell $shell '
        '(give it /usr/sbin/nologin)";; esac',
        f'[ "$home" = {h} ] || refuse "account {user} has home $home, not {home}"',
        f'[ -d {h} ] && [ "$(readlink -f -- {h})" = {h} ] || refuse "account {user}: '
        f'home {home} is not a folder (or has a link on its way)"',
        f"! runuser -u {u} -- test -w {h} || "
        f"refuse 'account {user}: home {home} is writable by {user}'",
        f'for p in {h}/.ssh {h}/.ssh/authorized_keys; do',
        f'  [ ! -L "$p" ] || refuse "account {user}: $p is a link"',
        f'  [ ! -e "$p" ] || ! runuser -u {u} -- test -w "$p" || '
        f'refuse "account {user}: $p is writable by {user}"',
        "done",
    ])


def authorize_script(user: str, home: str, paths: list[str], authorized: str) -> str:
    """On the backup host: check the account (above), give it the repository shell, make
    each client's repository folder (the account's, 0700; an existing one must be a folder
    of the account, not a link), then write the root-owned authorized_keys."""
    u = shlex.quote(user)
    lines = [account_check(user, home), install_file(SHELL_PATH, SHELL, mode="0755"),
             f'[ "$shell" = {SHELL_PATH} ] || usermod -s {SHELL_PATH} {u}']
    for path in paths:
        q, parent = shlex.quote(path), shlex.quote(path.rsplit("/", 1)[0] or "/")
        lines.append(
            f"if [ -e {q} ] || [ -L {q} ]; then "
            f"[ -d {q} ] && [ ! -L {q} ] && [ \"$(stat -c %u {q})\" = \"$uid\" ] || "
            f"refuse '{path} exists and is not a folder of {user}'; "
            f"else mkdir -p -- {parent} && mkdir -m 0700 -- {q} && chown -h {u}: {q}; fi")
    ssh = shlex.quote(f"{home.rstrip('/')}/.ssh")
    lines += [f"mkdir -p {ssh} && chown -h root:root {ssh} && chmod 0755 {ssh}",
              install_file(f"{home.rstrip('/')}/.ssh/authorized_keys", authorized, mode="0644")]
    return "\n".join(lines)


def repository_dirs_ready(user: str, paths: list[str]) -> str:
    """sh test: every repository folder is the account's, mode 0700, not a link."""
    u = shlex.quote(user)
    return " && ".join([f"[ ! -L {shlex.quote(p)} ] && "
                        f"[ \"$(stat -c %U:%a {shlex.quote(p)} 2>/dev/null)\" = {u}:700 ]"
                        for p in paths] or ["true"])


def prune_script(config: dict[str, Any], secret: str) -> str:
    """On the host that holds a repository: the job's prune (collapse check, then forget
    --keep-last --keep-monthly --prune) with the escrowed password from ``secret`` (a root-only
    file put there for this run), which goes however the run ends."""
    cfg = json.dumps({**config, "password_file": secret}, sort_keys=True)
    return (f"trap 'rm -f -- {shlex.quote(secret)}' EXIT; "
            f"python3 -c {shlex.quote(HELPER)} prune {shlex.quote(cfg)}")


def client_key_script(host: str) -> str:
    """The client's own SSH key for the backup host, generated on the host (it never leaves)."""
    return f"ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(MANAGED + host)} -f {KEY_FILE}"


def place_secret_script(uploaded: str, path: str) -> str:
    """An uploaded secret (in a root-only folder) made root 0600 and renamed into place."""
    u, p = shlex.quote(uploaded), shlex.quote(path)
    return f"chmod 0600 {u} && chown root:root {u} && mv -f {u} {p}"


TIMER_NEEDS_RELOAD = f"systemctl show -p NeedDaemonReload --value {TIMER} {SERVICE} | grep -qx yes"
TIMER_READY = f"systemctl is-enabled -q {TIMER} && systemctl is-active -q {TIMER}"
RELOAD_TIMER = f"systemctl daemon-reload && systemctl restart {TIMER}"
ENABLE_TIMER = f"systemctl daemon-reload && systemctl enable --now {TIMER}"
CRON_RUNNING = "pgrep -x cron >/dev/null"
START_CRON = "service cron start >/dev/null 2>&1 || cron"
REPOSITORY_OPENS = f"{HELPER_PATH} probe >/dev/null 2>&1"
INIT_REPOSITORY = f"{HELPER_PATH} init"
