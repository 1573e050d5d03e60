"""`baomi backup prune CLIENT...`: forget and prune clients' repositories where they are held.

Clients cannot remove snapshots (their repository is served append-only), so retention is an
operator's action from the controller, run on the host that holds each repository (the
backup host, as the repository account; the client itself for a local path) with the
password retrieved from the escrow, the retrieval recorded with the operator's reason.  The
password reaches the host as a root-only file (deploy/common.put_secret), removed when the
prune ends; the backup host never keeps a client's password.  The prune itself
(baomi/hostside/backup_job.py ``prune``) re-checks the repository folder and refuses when the
newest snapshot collapsed against the one before.

    BAOMI_PRUNE_CLIENTS   the clients, comma-separated
    BAOMI_PRUNE_REASON    why (recorded with each escrow retrieval)
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

# `pyinfra INVENTORY deploy/backup_prune.py` from a checkout without an installed baomi.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controller.escrow import EscrowError, EscrowStore
from baomi.controls import backup as core
from baomi.controls.contract import HostContext
from baomi.deploy.backup import server_host
from baomi.deploy.common import op_name, policy, put_secret
from baomi.fixes import backup as fix

CLIENTS = [c for c in os.environ.get("BAOMI_PRUNE_CLIENTS", "").split(",") if c]
REASON = os.environ.get("BAOMI_PRUNE_REASON", "")


def holder(want: core.Desired) -> str:
    """The inventory name of the host that holds a client's repository."""
    if want.remote is None:
        return want.host
    found = server_host(want.remote.server)
    return found.name if found is not None else ""


def jobs() -> list[core.Desired]:
    """The named clients whose repository this host holds."""
    out = []
    for client in host.state.inventory:
        if client.name in CLIENTS:
            want = core.desired(HostContext.of(policy(), client.groups, client.name))
            if want.applies and holder(want) == host.name:
                out.append(want)
    return out


@operation()
def prune_repositories(wants: list[core.Desired]):  # type: ignore[no-untyped-def]
    """Each repository in turn: its password put in place, then the prune (which removes it)."""
    if not wants:
        host.noop("holds none of the repositories named")
        return
    store = EscrowStore.default()
    for want in wants:
        try:
            secret = store.retrieve(core.ESCROW_KIND, want.host, want.repository, REASON).secret
        except EscrowError as exc:
            raise OperationError(f"{want.host}: {exc}") from None
        path = f"/run/baomi-prune-{secrets.token_hex(12)}"
        yield from put_secret(path, secret)
        yield fix.prune_script(core.prune_config(want), path)


if not CLIENTS or not REASON:
    raise SystemExit("deploy/backup_prune.py: set BAOMI_PRUNE_CLIENTS and BAOMI_PRUNE_REASON "
                     "(run it through `baomi backup prune`)")
prune_repositories(name=op_name(core.CONTROL.name, "prune repositories"), wants=jobs())
