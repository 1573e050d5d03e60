"""R-LOG on a host: rsyslog forwarding over TLS (or, on the log host, receiving), certificates
from the controller's log CA (see :mod:`baomi.controls.log_forwarding`)."""

from __future__ import annotations

import hashlib
import shlex
from typing import Any, cast

from pyinfra import host, inventory
from pyinfra.api import operation
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from baomi.controls import log_forwarding as core
from baomi.deploy import log_tls
from baomi.deploy.common import (
    CommandSucceeds,
    context,
    nothing_to_do,
    op_name,
    put_secret,
    put_text,
    shell_if,
)
from baomi.fixes.log_forwarding import RESTART, START

C = core.CONTROL.name


@operation()
def host_key(key: bytes):  # type: ignore[no-untyped-def]
    """The host's TLS key, root 0600, uploaded only when the host's differs (never on argv)."""
    digest = hashlib.sha256(key).hexdigest()
    check = (f"[ \"$(stat -c '%a %U' {core.KEY_FILE})\" = '600 root' ] && "
             f"sha256sum {core.KEY_FILE} | grep -q ^{digest}")
    if host.get_fact(CommandSucceeds, check=check):
        host.noop(f"{core.KEY_FILE} is the controller's key for this host")
        return
    yield from put_secret(core.KEY_FILE, key.decode())


def _senders() -> list[str]:
    """Addresses of every other inventory host: a folder each on the log host."""
    return sorted({str(h.data.get("ssh_hostname") or h.name) for h in inventory
                   if h.name != host.name})


def apply() -> None:
    want = core.desired(context())
    reason = core.not_applicable(want)
    if reason:
        nothing_to_do(name=op_name(C, "log forwarding"), reason=reason)
        return
    apt.packages(name=op_name(C, "rsyslog packages"), packages=["rsyslog", "rsyslog-gnutls"])
    ca_pem, _ = log_tls.ca()
    cert, key = log_tls.host_pair(host.name, str(host.data.get("ssh_hostname") or host.name))
    files.directory(name=op_name(C, core.TLS_DIR), path=core.TLS_DIR, user="root",
                    group="root", mode="0755")
    changed = [put_text(C, core.CA_FILE, ca_pem.decode()),
               put_text(C, core.CERT_FILE, cert.decode()),
               host_key(name=op_name(C, core.KEY_FILE), key=key),
               put_text(C, want.conf_path, want.conf)]
    other = core.SEND_FILE if want.receiver else core.RECEIVE_FILE
    changed.append(files.file(name=op_name(C, f"{other} absent"), path=other, present=False))
    if want.receiver:
        files.directory(name=op_name(C, core.REMOTE_DIR), path=core.REMOTE_DIR, user="root",
                        group="root", mode="0700")
        for sender in _senders():
            files.directory(name=op_name(C, f"{core.REMOTE_DIR}/{sender}"),
                            path=f"{core.REMOTE_DIR}/{sender}", user="root", group="root",
                            mode="0700")
    started = "" if want.receiver else (
        f" && logger -p authpriv.notice -t {core.STARTED_TAG} "
        + shlex.quote(f"forwarding to {want.target}:{want.port}"))
    shell_if(name=op_name(C, "restart rsyslog"), check="false", command=RESTART + started,
             reason="", _if=any_changed(*cast(Any, changed)))
    shell_if(name=op_name(C, "rsyslogd running"), check="pgrep -x rsyslogd >/dev/null",
             command=START + started, reason="rsyslogd is running")
