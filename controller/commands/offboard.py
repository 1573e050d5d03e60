"""`baomi offboard`: freeze a departed user everywhere, purge what is due, show the status.

The steps come from baomi/fixes/offboarding.py and run through deploy/offboarding.py (pyinfra,
via baomi/controller/runner.py). This module keeps the controller's evidence: an append-only
ledger of JSON lines (``$BAOMI_STATE_DIR/offboarding/ledger.jsonl``, default state dir
/var/lib/baomi, mode 0600; at the collector when the policy says ``collector.records:
collector``: baomi/recordstore.py), one line per user and host and run, from which
``--status`` is folded.  A host that could not be reached is *pending*; the next ``baomi
offboard USER`` or ``--purge-due`` run freezes it.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from baomi import offboarding as core
from baomi.controller.ledger import append, fold, ledger_path, read_ledger, records, use_policy
from baomi.controller.pyinfra_result import CHANGED, FAILED, UNCHANGED, WOULD_CHANGE
from baomi.controller.runner import DEPLOYS, ApplyResult, run
from baomi.controls import accounts
from baomi.inventory import InventoryError
from baomi.inventory import read as read_inventory
from baomi.policy import default_policy_path
from baomi.records import RecordError
from baomi.recordstore import LocalStore
from baomi.ui import EXIT_USAGE, fail, json_option, load_policy_or_exit, policy_option, print_json

DEPLOY_FILE = DEPLOYS / "offboarding.py"
EXIT_REFUSED = EXIT_USAGE


def connect_users(inventory: str) -> dict[str, str | None]:
    """{host: the user the deploy connects as} from a pyinfra inventory (data only)."""
    try:
        hosts = read_inventory(inventory)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    return {name: h.data.get("ssh_user") for name, h in hosts.items()}


def refuse(message: str) -> None:
    fail(f"baomi offboard: refused: {message}; nothing was run", EXIT_REFUSED)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)",
                                 param_hint=option) from None


def run_deploy(inventory: str, policy_path: str, env: dict[str, str], *, dry: bool,
               limit: list[str], hosts: list[str],
               ) -> tuple[ApplyResult, dict[str, list[dict[str, Any]]]]:
    """Run deploy/offboarding.py; return the runner's result and each host's planned steps."""
    with tempfile.TemporaryDirectory(prefix="baomi-offboard-") as folder:
        result = run(inventory, policy_path, dry=dry, limit=limit, known_hosts=hosts,
                     deploy_file=DEPLOY_FILE,
                     extra_env={**env, "BAOMI_OFFBOARD_PLAN": folder},
                     progress=lambda line: None)
        plans = {p.stem: json.loads(p.read_text(encoding="utf-8"))
                 for p in Path(folder).glob("*.json")}
    return result, plans


def host_outcomes(result: ApplyResult, plans: dict[str, list[dict[str, Any]]], dry: bool,
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """{host: {user: {phases, done, already, failed, would}}} by joining plan and results."""
    said = {CHANGED: "done", UNCHANGED: "already", FAILED: "failed", WOULD_CHANGE: "would"}
    per_op = {(host, op.op_hash): said[op.outcome]
              for host, ops in result.operations.items() for op in ops}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for host, plan in plans.items():
        for item in plan:
            user = out.setdefault(host, {}).setdefault(item["user"], {
                "phases": [], "done": [], "already": [], "failed": [], "would": [],
                "not_run": [], "due": None})
            if item["phase"] not in user["phases"]:
                user["phases"].append(item["phase"])
            if item.get("due"):
                user["due"] = item["due"]
            # A dry run's plan names only hosts with a change: the others have it already.
            outcome = per_op.get((host, item["hash"]), "already" if dry else "not_run")
            user[outcome].append(item["what"])
    return out


def refusal_text(got: dict[str, Any]) -> str:
    """A host's refusal, as the ledger's error: the refused operation's name is its reason
    (pyinfra stops the host on it at prepare time, so it may count as any outcome)."""
    return "; ".join(got["done"] + got["already"] + got["failed"] + got["not_run"]
                     + got["would"])


def _error(result: ApplyResult, host: str) -> str | None:
    r = result.hosts.get(host)
    return (r.error or None) if r is not None else None


@click.command("offboard")
@click.argument("user", required=False)
@click.option("--ticket", help="HR's ticket for this departure (required to freeze).")
@click.option("--reason", default="", help="Why (recorded with the ticket).")
@click.option("--effective", default=None, metavar="now|DATE",
              help="Departure date the deletion is counted from (default: now, or the date "
                   "of an earlier freeze of this user).")
@click.option("-i", "--inventory", help="pyinfra inventory of the fleet.")
@policy_option
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--operator", default=None, help="Who runs this (default: $SUDO_USER or you).")
@click.option("--dry", is_flag=True, help="Show exactly what would be done per host.")
@click.option("--purge-due", is_flag=True,
              help="Archive and delete every frozen user whose due date has come (daily).")
@click.option("--now", "now_date", default=None, metavar="DATE",
              help="With --purge-due: the date to judge 'due' by (default: today, UTC).")
@click.option("--status", is_flag=True, help="Per user and host: frozen / deleted / pending.")
@click.option("--cancel", is_flag=True,
              help="USER's freeze is not to end in deletion (a rehire, a mistake); with "
                   "--ticket. Recorded in the ledger and each host's record.")
@click.option("--force", is_flag=True,
              help="Accept a --now in the future or an --effective date more than "
                   f"{core.EFFECTIVE_MAX_AGE_DAYS} days old (recorded in the ledger).")
@json_option
def offboard(user: str | None, ticket: str | None, reason: str, effective: str | None,
             inventory: str | None, policy_path: str | None, limit: tuple[str, ...],
             operator: str | None, dry: bool, purge_due: bool, now_date: str | None,
             status: bool, cancel: bool, force: bool, as_json: bool) -> None:
    """R-OFF/R-RET: freeze USER on every host at once; delete at the end of the next month.

    \b
    baomi offboard USER --ticket T -i INVENTORY [--dry]
    baomi offboard --purge-due -i INVENTORY [--now DATE]
    baomi offboard USER --cancel --ticket T -i INVENTORY
    baomi offboard --status [USER]
    """
    if status:
        show_status(user, as_json)
        return
    if not inventory:
        raise click.UsageError("give -i INVENTORY (the fleet to offboard on)")
    path = policy_path or default_policy_path()
    policy = load_policy_or_exit(path, as_json=as_json)
    use_policy(path)
    hosts = connect_users(inventory)
    groups = read_inventory(inventory)  # readable: connect_users has just read it
    # --limit takes host and group names, as pyinfra's does.
    names = [h for h in hosts if not limit or h in limit or groups[h].groups & set(limit)]
    who = operator or os.environ.get("SUDO_USER") or getpass.getuser()
    if purge_due:
        if user:
            raise click.UsageError("--purge-due takes no USER (it purges every due user)")
        today = _date(now_date, "--now") if now_date else datetime.now(UTC).date()
        forced = bounded(core.date_problems(datetime.now(UTC).date(), now=today), force)
        code = purge(inventory, path, names, list(limit), today, who, dry, as_json, forced)
        sys.exit(code)
    if not user:
        raise click.UsageError("give the USER to offboard (or --purge-due, --status)")
    if not ticket:
        raise click.UsageError("--ticket is required: the regulation traces every freeze "
                               "to HR's request")
    problem = core.refusal(policy, user)
    if problem:
        refuse(problem)
    if cancel:
        sys.exit(cancel_freeze(inventory, path, names, list(limit), user, ticket, reason, who,
                               as_json))
    connecting = sorted(h for h in names if hosts.get(h) == user)
    if connecting:
        refuse(f"{user} is the account the deploy connects as on {', '.join(connecting)}")
    earlier = fold(read_ledger()).get(user, {})
    if effective in (None, "now"):
        previous = [str(r["effective"]) for r in earlier.values()
                    if r.get("state") in ("frozen", "pending") and r.get("effective")]
        day = (date.fromisoformat(sorted(previous)[0])
               if previous and effective is None else datetime.now(UTC).date())
    else:
        day = _date(effective, "--effective")
        if day > datetime.now(UTC).date():
            raise click.BadParameter(f"{day} is in the future: the freeze takes effect at "
                                     "once; run this on the day of departure",
                                     param_hint="--effective")
    forced = bounded(core.date_problems(datetime.now(UTC).date(), effective=day), force)
    code = freeze(inventory, path, names, list(limit), user, ticket, reason, day, who, dry,
                  as_json, forced)
    sys.exit(code)


def bounded(problems: list[str], force: bool) -> str | None:
    """Refuse a date that deletes users before their time, unless --force; then it is what
    the ledger records as forced."""
    if problems and not force:
        refuse("; ".join(problems) + "; give --force to do it anyway (recorded)")
    return "; ".join(problems) or None


def freeze(inventory: str, policy_path: str, names: list[str], limit: list[str], user: str,
           ticket: str, reason: str, day: date, operator: str, dry: bool,
           as_json: bool, forced: str | None = None) -> int:
    time = now_utc()
    env = {"BAOMI_OFFBOARD_ACTION": "freeze", "BAOMI_OFFBOARD_USER": user,
           "BAOMI_OFFBOARD_TICKET": ticket, "BAOMI_OFFBOARD_REASON": reason,
           "BAOMI_OFFBOARD_OPERATOR": operator, "BAOMI_OFFBOARD_EFFECTIVE": day.isoformat(),
           "BAOMI_OFFBOARD_TIME": time}
    # The catch-up of --purge-due passes the pending hosts as LIMIT; a user's --limit was
    # already applied to NAMES (hosts and groups).
    targets = [h for h in names if h in limit] or names
    result, plans = run_deploy(inventory, policy_path, env, dry=dry, limit=limit,
                               hosts=targets)
    outcomes = host_outcomes(result, plans, dry)
    due = core.due_date(day).isoformat()
    events: list[dict[str, Any]] = []
    for host in sorted(result.hosts):
        got = outcomes.get(host, {}).get(user)
        error = _error(result, host)
        if got is None:
            state = "pending"
            error = error or "not reached"
        elif "refused" in got["phases"]:
            state, error = "refused", refusal_text(got)
        elif "absent" in got["phases"]:
            state = "absent"
        elif got["failed"] or got["not_run"] or error:
            state = "pending"
            error = error or f"failed: {', '.join(got['failed'] or got['not_run'])}"
        else:
            state = "would freeze" if dry and got["would"] else "frozen"
        events.append({
            "time": time, "action": "freeze", "user": user, "host": host, "state": state,
            "ticket": ticket, "reason": reason, "operator": operator,
            "effective": day.isoformat(), "due": due, "dry": dry,
            "done": (got or {}).get("done", []), "already": (got or {}).get("already", []),
            "would": (got or {}).get("would", []), "error": error, "forced": forced,
            "clauses": list(core.CLAUSES)})
    if not dry:
        append(events)
    summary = {"user": user, "ticket": ticket, "due": due, "dry": dry,
               "seconds": round(result.seconds, 2), "hosts": {e["host"]: e for e in events}}
    if as_json:
        print_json(summary)
    else:
        verb = "would freeze" if dry else "freeze"
        click.echo(f"{verb} {user} (ticket {ticket}); deletion due {due}; "
                   f"{result.seconds:.1f}s")
        for e in events:
            line = f"  {e['host']}: {e['state']}"
            if dry:
                line += "".join(f"\n      would: {w}" for w in e["would"]) or " (nothing to do)"
            elif e["done"]:
                line += f" ({len(e['done'])} steps done, {len(e['already'])} already)"
            elif e["state"] == "frozen":
                line += " (already frozen: nothing changed)"
            if e["error"]:
                line += f" — {e['error']}"
            click.echo(line)
    states = {e["state"] for e in events}
    if "refused" in states:
        return EXIT_REFUSED
    return 1 if "pending" in states else 0


def cancel_freeze(inventory: str, policy_path: str, names: list[str], limit: list[str],
                  user: str, ticket: str, reason: str, operator: str, as_json: bool) -> int:
    """Mark USER's freeze cancelled on every host that has it (each host's record and the
    ledger); a host not reached is 'cancel pending', retried by the next --purge-due first."""
    time = now_utc()
    env = {"BAOMI_OFFBOARD_ACTION": "cancel", "BAOMI_OFFBOARD_USER": user,
           "BAOMI_OFFBOARD_TICKET": ticket, "BAOMI_OFFBOARD_REASON": reason,
           "BAOMI_OFFBOARD_OPERATOR": operator, "BAOMI_OFFBOARD_TIME": time}
    targets = [h for h in names if h in limit] or names
    result, plans = run_deploy(inventory, policy_path, env, dry=False, limit=limit,
                               hosts=targets)
    outcomes = host_outcomes(result, plans, False)
    events: list[dict[str, Any]] = []
    for host in sorted(result.hosts):
        got = outcomes.get(host, {}).get(user)
        error = _error(result, host)
        if got is not None and "refused" in got["phases"]:
            state, error = "refused", refusal_text(got)
        elif got is None or got["failed"] or got["not_run"] or error:
            state = "cancel pending"
            error = error or "not reached"
        elif "absent" in got["phases"]:
            state = "absent"
        else:
            state = "cancelled"
        events.append({"time": time, "action": "cancel", "user": user, "host": host,
                       "state": state, "ticket": ticket, "reason": reason,
                       "operator": operator, "done": (got or {}).get("done", []),
                       "error": error, "clauses": list(core.CLAUSES)})
    append(events)
    if as_json:
        print_json({"user": user, "ticket": ticket, "hosts": {e["host"]: e for e in events}})
    else:
        for e in events:
            click.echo(f"{user} on {e['host']}: {e['state']}"
                       + (f" — {e['error']}" if e["error"] else ""))
    return 1 if any(e["state"] in ("cancel pending", "refused") for e in events) else 0


def _revoke_requests(events: list[dict[str, Any]], operator: str) -> None:
    """A deleted user's account requests are revoked (R-PRV), so `baomi account apply` never
    recreates them; recorded with the freeze's ticket."""
    deleted = {e["user"] for e in events if e["state"] == "deleted" and e["user"]}
    if not deleted:
        return
    try:
        store = records()
        requested = {r.user for r in accounts.load_requests(store=store)}
    except RecordError as exc:
        click.echo(f"account requests not revoked: {exc}", err=True)
        return
    tickets = {u: str(r.get("ticket") or "") for u, rows in fold(read_ledger()).items()
               for r in rows.values() if r.get("ticket")}
    for user in sorted(deleted & requested):
        accounts.revoke(user, by=operator, ticket=tickets.get(user) or "offboarding purge",
                        reason="purged (baomi offboard --purge-due)", store=store)


def purge(inventory: str, policy_path: str, names: list[str], limit: list[str], today: date,
          operator: str, dry: bool, as_json: bool, forced: str | None = None) -> int:
    time = now_utc()
    code = 0
    # Catch-up first: cancellations that did not reach a host, then hosts that were
    # unreachable at the freeze are frozen now.
    for user, rows in sorted(fold(read_ledger()).items()):
        waiting = sorted(h for h, r in rows.items() if r.get("state") == "cancel pending"
                         and h in names)
        if waiting and not dry:
            first = next(iter(r for r in rows.values() if r.get("state") == "cancel pending"))
            code |= cancel_freeze(inventory, policy_path, names, waiting, user,
                                  str(first.get("ticket", "")), "catch-up of a pending cancel",
                                  operator, as_json)
    for user, rows in sorted(fold(read_ledger()).items()):
        pending = sorted(h for h, r in rows.items() if r.get("state") == "pending"
                         and h in names)
        if pending and not dry:
            first = next(iter(r for r in rows.values() if r.get("ticket")), {})
            day = date.fromisoformat(first.get("effective") or today.isoformat())
            code |= freeze(inventory, policy_path, names, pending, user,
                           str(first.get("ticket", "")), "catch-up of a pending freeze", day,
                           operator, False, as_json)
    env = {"BAOMI_OFFBOARD_ACTION": "purge", "BAOMI_OFFBOARD_NOW": today.isoformat(),
           "BAOMI_OFFBOARD_TIME": time}
    result, plans = run_deploy(inventory, policy_path, env, dry=dry, limit=limit, hosts=names)
    outcomes = host_outcomes(result, plans, dry)
    events: list[dict[str, Any]] = []
    for host in sorted(result.hosts):
        error = _error(result, host)
        if host not in plans:
            # A reached host writes a plan only when it holds frozen users: no plan and no
            # error means nothing to purge there, not an unreachable host.
            if error or host in result.failed:
                events.append({"time": time, "action": "purge", "user": None, "host": host,
                               "state": "unreachable", "error": error or "not reached",
                               "dry": dry})
            continue
        for user, got in sorted(outcomes.get(host, {}).items()):
            archive = next((w.split(" to ", 1)[1].split(" (", 1)[0] for w in
                            got["done"] + got["already"] + got["would"]
                            if w.startswith("archive ")), None)
            if "wait" in got["phases"]:
                state = "waiting"
            elif "refused" in got["phases"]:
                state, error = "refused", refusal_text(got)
            elif got["failed"] or got["not_run"]:
                state = "frozen"
                error = error or f"purge failed: {', '.join(got['failed'] or got['not_run'])}"
            else:
                state = "would delete" if dry else "deleted"
            events.append({
                "time": time, "action": "purge", "user": user, "host": host, "state": state,
                "operator": operator, "now": today.isoformat(), "due": got["due"],
                "archive": archive, "done": got["done"], "already": got["already"],
                "would": got["would"], "error": error, "dry": dry, "forced": forced,
                "clauses": list(core.CLAUSES)})
    if not dry:
        append(events)
        _revoke_requests(events, operator)
    if as_json:
        print_json({"now": today.isoformat(), "dry": dry, "events": events})
    else:
        for e in events:
            if e["state"] == "waiting":
                click.echo(f"{e['user']} on {e['host']}: frozen; nothing to do until the "
                           f"deletion date {e['due']}")
            elif e["state"] in ("deleted", "would delete"):
                click.echo(f"{e['user']} on {e['host']}: {e['state']}; archive {e['archive']}")
            elif e["user"] is None:
                click.echo(f"{e['host']}: unreachable — {e['error']} (retried next run)")
            else:
                click.echo(f"{e['user']} on {e['host']}: {e['state']} — {e['error']}")
        if not events:
            click.echo("nothing frozen on these hosts")
    failed = any(e["state"] in ("unreachable", "refused") or e.get("error") for e in events)
    return code | (1 if failed else 0)


def show_status(user: str | None, as_json: bool) -> None:
    table = fold(read_ledger())
    if user:
        table = {user: table.get(user, {})}
    if as_json:
        print(json.dumps(table, ensure_ascii=False, indent=2, sort_keys=True))
        return
    if not any(table.values()):
        store = records()
        where = ledger_path() if isinstance(store, LocalStore) else store.where
        click.echo(f"no offboarding recorded{' for ' + user if user else ''} (ledger {where})")
        return
    for name, hosts in sorted(table.items()):
        for host, row in sorted(hosts.items()):
            state = row["state"]
            line = f"{name}\t{host}\t{state}\tsince {row['since']}"
            if state == "frozen":
                line += f"\tdeletion due {row.get('due')}\tticket {row.get('ticket')}"
            if state == "deleted":
                line += f"\tarchive {row.get('archive')}"
            if state == "pending":
                line += f"\t(host unreachable or failed: {row.get('error')}; retried next run)"
            click.echo(line)
