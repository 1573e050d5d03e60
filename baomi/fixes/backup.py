"""R-BAK fixes: the backup host's authorised client keys and repository folders, the client's
key, password, schedule and repository.

The repository password is the one file here that does not go through
:func:`baomi.fixes.install.install_file`: install_file carries the content inside the script,
and a secret must never be on a command line (a local user of the host could read it from the
process list).  The deploy uploads it over SFTP into the root-only 0700 configuration folder,
and :func:`place_secret_script` gives it its mode and renames it into place.
"""

from __future__ import annotations

import shlex

from baomi.controls.backup import HELPER_PATH, KEY_FILE, SERVICE, TIMER
from baomi.fixes.install import install_file

MANAGED = "baomi-backup@"  # the comment that marks the client keys baomi manages


def authorized_line(client: str, key: str) -> str:
    return f'restrict,command="internal-sftp" {key} {MANAGED}{client}\n'


def merge_authorized(existing: str, published: dict[str, str]) -> str:
    """Managed entries of clients in this run replaced, every other line kept."""
    kept = [line + "\n" for line in existing.splitlines()
            if line.strip() and line.split()[-1].removeprefix(MANAGED) not in published]
    return "".join(kept) + "".join(authorized_line(c, k) for c, k in sorted(published.items()))


def authorized_keys_script(path: str, content: str) -> str:
    """authorized_keys of the SFTP account, root-owned in a root-owned folder: the account
    cannot change who may log in as it."""
    directory = shlex.quote(path.rsplit("/", 1)[0])
    return (f"mkdir -p {directory} && chown root:root {directory} && chmod 0755 {directory}\n"
            + install_file(path, content, mode="0644"))


def repository_dir_check(path: str, user: str) -> str:
    q = shlex.quote(path)
    return f"[ \"$(stat -c %U:%a {q} 2>/dev/null)\" = {shlex.quote(user)}:700 ]"


def repository_dir_script(path: str, user: str) -> str:
    q, u = shlex.quote(path), shlex.quote(user)
    return f"mkdir -p {q} && chown {u}: {q} && chmod 0700 {q}"


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
