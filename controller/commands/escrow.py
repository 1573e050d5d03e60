"""`baomi escrow`: recovery secrets held on the controller, sealed to an offline key.

    baomi escrow keygen --identity FILE              the key pair: private half to FILE (0600;
                                                     move it offline), public half in the store
    baomi escrow list [--json]                       every entry, never a secret
    baomi escrow show HOST SUBJECT --reason TEXT --identity FILE [--operator NAME] [--kind K]
                      [--json]                       the latest secret; the retrieval is recorded
    baomi escrow migrate --identity FILE             re-seal an old (Fernet) store once

The store is ``$BAOMI_ESCROW_DIR`` or /var/lib/baomi/escrow (baomi/controller/escrow.py), or
the collector when the policy says ``collector.records: collector`` (the same commands; the
collector keeps the public key and the sealed entries, never the identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from baomi.ui import json_option, print_json

if TYPE_CHECKING:
    from baomi.controller.escrow import EscrowStore

LUKS_RECOVERY = "luks-recovery"


def _store() -> EscrowStore:
    # Imported here: the store needs `cryptography` (baomi[admin]); `baomi --help` must not.
    from baomi.controller.escrow import EscrowError, EscrowStore

    try:
        return EscrowStore.default()
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None


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
        print_json({"store": store.where, "entries": entries})
        return
    if not entries:
        click.echo(f"{store.where}: no escrowed secrets")
        return
    for e in entries:
        uuid = e.get("meta", {}).get("luks_uuid", "")
        click.echo(f"{e['created']}  {e['kind']:<14} {e['host']:<16} {e['subject']}"
                   + (f"  LUKS UUID {uuid}" if uuid else ""))


IDENTITY = click.option("--identity", required=True,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="The escrow's private key file (kept offline).")


@escrow.command("keygen")
@IDENTITY
def escrow_keygen(identity: Path) -> None:
    """Make the key pair: the store keeps the public half (escrow only); IDENTITY gets the
    private half, needed for every retrieval: move it offline."""
    from baomi.controller.escrow import EscrowError

    store = _store()
    try:
        fp = store.keygen(identity)
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"public key {store.recipient_file if store.local else store.where} "
               f"(fingerprint {fp})")
    click.echo(f"private key {identity.resolve()} (0600): move it offline; "
               "`baomi escrow show` needs it")


@escrow.command("migrate")
@IDENTITY
def escrow_migrate(identity: Path) -> None:
    """Re-seal a store made before the key pair (its key beside the entries) and delete that
    key; IDENTITY gets the new private key."""
    from baomi.controller.escrow import EscrowError

    store = _store()
    try:
        count = store.migrate(identity)
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{store.dir}: {count} entries re-sealed, old key deleted; private key "
               f"{identity.resolve()} (0600): move it offline")


@escrow.command("show")
@click.argument("host")
@click.argument("subject")
@click.option("--reason", required=True,
              help="Why the secret is retrieved (recorded with who and when).")
@IDENTITY
@click.option("--operator", default=None,
              help="Who retrieves (recorded; default: sudo's original user, else the login).")
@click.option("--kind", default=LUKS_RECOVERY, show_default=True, help="Kind of secret.")
@json_option
def escrow_show(host: str, subject: str, reason: str, identity: Path, operator: str | None,
                kind: str, as_json: bool) -> None:
    """Print the latest secret escrowed for HOST and SUBJECT (a device, a repository);
    the retrieval is recorded first."""
    if not reason.strip():
        raise click.BadParameter("give a reason; it is recorded", param_hint="--reason")
    from baomi.controller.escrow import EscrowError

    store = _store()
    try:
        entry = store.retrieve(kind, host, subject, reason=reason, identity=identity,
                               operator=operator)
    except EscrowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"id": entry.id, "kind": entry.kind, "host": entry.host,
                    "subject": entry.subject, "created": entry.created, "meta": entry.meta,
                    "secret": entry.secret})
        return
    uuid = entry.meta.get("luks_uuid")
    click.echo(f"# {entry.kind} for {entry.host} {entry.subject}"
               + (f" (LUKS UUID {uuid})" if uuid else "")
               + f", escrowed {entry.created}; this retrieval is recorded", err=True)
    click.echo(entry.secret)
