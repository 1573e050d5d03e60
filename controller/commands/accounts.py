"""`baomi account`: record who requested and who approved an account (R-PRV), create them.

    baomi account request USER --requester HEAD --approver VP [--host H] [--ticket T]
    baomi account revoke USER --ticket T --by WHO [--reason R]   (apply no longer creates it)
    baomi account list
    baomi account apply -i INVENTORY      (creates only accounts a request covers)
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from baomi.controller.commands.apply import print_apply
from baomi.controller.runner import DEPLOYS, run
from baomi.controls import accounts as core
from baomi.inventory import InventoryError, host_groups
from baomi.policy import default_policy_path
from baomi.records import RecordError
from baomi.recordstore import ACCOUNTS, LocalStore, RecordStore, open_store
from baomi.ui import fail, json_option, load_policy_or_exit, policy_option, print_json

DEPLOY_FILE = DEPLOYS / "accounts.py"


def records() -> RecordStore:
    """Where requests live: the state dir, or the collector the policy names."""
    try:
        return open_store()
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None


def where(store: RecordStore) -> str:
    return str(core.requests_path()) if isinstance(store, LocalStore) else store.where


@click.group("account")
def account() -> None:
    """R-PRV: accounts only with a recorded request (部门主管) and approval (分管副总)."""


@account.command("request")
@click.argument("user")
@click.option("--requester", required=True, help="Department head who asks (部门主管提报).")
@click.option("--approver", required=True, help="Senior who approves (分管副总批准).")
@click.option("--host", "hosts", multiple=True, help="Only on these hosts (default: all).")
@click.option("--ticket", default="", help="The request's ticket.")
@click.option("--reason", default="", help="Why the account is needed.")
def request_cmd(user: str, requester: str, approver: str, hosts: tuple[str, ...], ticket: str,
                reason: str) -> None:
    """Record an approved request for USER (append-only, 0600)."""
    req = core.Request(user, requester, approver,
                       datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), hosts, ticket, reason)
    found = core.problems(req)
    if found:
        fail(f"baomi account request: {'; '.join(found)}; nothing was recorded")
    store = records()
    try:
        store.append(ACCOUNTS, [req.as_dict()])
    except RecordError as exc:
        raise click.ClickException(f"{exc}; nothing was recorded") from None
    click.echo(f"recorded: {user} requested by {requester}, approved by {approver} "
               f"({', '.join(hosts) or 'all hosts'}) in {where(store)}")


@account.command("revoke")
@click.argument("user")
@click.option("--ticket", required=True, help="The ticket of the revocation.")
@click.option("--by", "by", required=True, help="Who revokes (recorded).")
@click.option("--reason", default="", help="Why (recorded).")
def revoke_cmd(user: str, ticket: str, by: str, reason: str) -> None:
    """Revoke USER's requests (recorded): `account apply` no longer creates USER, and the
    check flags the account where it still exists. A new request grants it again."""
    store = records()
    try:
        live = [r for r in core.load_requests(store=store) if r.user == user]
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    if not live:
        fail(f"baomi account revoke: no request in force for {user} in {where(store)}; "
             "nothing was recorded")
    try:
        core.revoke(user, by, ticket, reason, store=store)
    except ValueError as exc:
        fail(f"baomi account revoke: {exc}; nothing was recorded")
    except RecordError as exc:
        raise click.ClickException(f"{exc}; nothing was recorded") from None
    click.echo(f"revoked: {user} by {by} (ticket {ticket}); `baomi account apply` no longer "
               f"creates it; recorded in {where(store)}")


@account.command("list")
def list_cmd() -> None:
    """The recorded requests."""
    try:
        requests = core.load_requests(store=records())
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    for r in requests:
        click.echo(f"{r.user}\trequested by {r.requester}\tapproved by {r.approver}\t{r.time}"
                   f"\t{', '.join(r.hosts) or 'all hosts'}\t{r.ticket}")


@account.command("apply")
@click.option("-i", "--inventory", required=True, help="pyinfra inventory of the fleet.")
@policy_option
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@json_option
def apply_cmd(inventory: str, policy_path: str | None, dry: bool, as_json: bool) -> None:
    """Create the accounts that a recorded request covers (and no other)."""
    path = policy_path or default_policy_path()
    load_policy_or_exit(path, as_json=as_json)
    try:
        hosts = list(host_groups(inventory))
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    result = run(inventory, path, dry=dry, known_hosts=hosts,
                 deploy_file=DEPLOY_FILE, extra_env={"BAOMI_ACCOUNTS_DEPLOY": "1"})
    if as_json:
        print_json(result.as_dict())
    else:
        print_apply(result, "baomi account apply")
    sys.exit(result.exit_code)
