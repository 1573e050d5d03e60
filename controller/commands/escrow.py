"""`baomi escrow`: recovery secrets held on the controller (R-ENC LUKS recovery passphrases).

    baomi escrow list [--json]                       every entry, never a secret
    baomi escrow show HOST DEVICE [--reason TEXT] [--kind K] [--json]
                                                     the latest secret; the retrieval is recorded

The store is ``$BAOMI_ESCROW_DIR`` or /var/lib/baomi/escrow (baomi/controller/escrow.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from baomi.ui import json_option, print_json

if TYPE_CHECKING:
    from baomi.controller.escrow import EscrowStore

LUKS_RECOVERY = "luks-recovery"


def _store() -> EscrowStore:
    # Imported here: the store needs `cryptography` (baomi[admin]); `baomi --help` must not.
    from baomi.controller.escrow import EscrowStore

    return EscrowStore.default()


@click.group()
def escrow() -> None:
    """Recovery secrets escrowed on the controller; every retrieval is recorded."""


@escrow.command("list")
@json_option
def escrow_list(as_json: bool) -> None:
    """Every escrowed entry (host, device, kind, date, LUKS UUID), without secrets."""
    from baomi.controller.escrow import EscrowError

    store = _store()
    try:
        entries = store.entries()
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"store": str(store.dir), "entries": entries})
        return
    if not entries:
        click.echo(f"{store.dir}: no escrowed secrets")
        return
    for e in entries:
        uuid = e.get("meta", {}).get("luks_uuid", "")
        click.echo(f"{e['created']}  {e['kind']:<14} {e['host']:<16} {e['subject']}"
                   + (f"  LUKS UUID {uuid}" if uuid else ""))


@escrow.command("show")
@click.argument("host")
@click.argument("device")
@click.option("--reason", default="recovery", show_default=True,
              help="Why the secret is retrieved (recorded with who and when).")
@click.option("--kind", default=LUKS_RECOVERY, show_default=True, help="Kind of secret.")
@json_option
def escrow_show(host: str, device: str, reason: str, kind: str, as_json: bool) -> None:
    """Print the latest secret escrowed for HOST and DEVICE (records the retrieval first)."""
    if not reason.strip():
        raise click.BadParameter("give a reason; it is recorded", param_hint="--reason")
    from baomi.controller.escrow import EscrowError

    store = _store()
    try:
        entry = store.retrieve(kind, host, device, reason=reason)
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"id": entry.id, "kind": entry.kind, "host": entry.host,
                    "subject": entry.subject, "created": entry.created, "meta": entry.meta,
                    "secret": entry.secret})
        return
    uuid = entry.meta.get("luks_uuid", "?")
    click.echo(f"# {entry.kind} for {entry.host} {entry.subject} (LUKS UUID {uuid}, "
               f"escrowed {entry.created}); this retrieval is recorded", err=True)
    click.echo(entry.secret)
