"""``baomi collector import`` and ``baomi collector verify-log``: the system of record's commands.

``import`` runs on a controller: its local records (escrow entries and retrievals, the
offboarding ledger, account requests, wipe records, the escrow public key) go to the
collector of the ``baomi login`` session, each read back and compared; the local files are
only read, so a failure halfway loses nothing and a second run stores nothing twice.

``verify-log`` checks the hash-chained log of human actions: on the collector host straight
from its database (``FOLDER``, ``--db``: the chain, plus every record against the line that
logged it), or from a terminal through the API (``GET /api/v1/log``, checked here with the
same code, and the collector's own full check). ``--head SEQ:HASH``, a head printed by an
earlier run, also proves that nothing after it was cut off. Exit 1 when anything is wrong.
"""

from __future__ import annotations

import json
from typing import Any

import click

from baomi.collector import auditlog


def _head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    try:
        return auditlog.parse_head(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--head") from None


def _from_database(folder: str, database: str | None,
                   head: tuple[int, str] | None) -> dict[str, Any]:
    from pathlib import Path

    from baomi.collector.config import ConfigError, load
    from baomi.collector.db import Database, DatabaseUnavailable, Refused

    try:
        url = database or load(Path(folder)).database
        db = Database(url)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        return db.read_only(lambda tx: auditlog.check(tx, head))
    except (DatabaseUnavailable, Refused) as exc:
        raise click.ClickException(f"the collector's database: {exc}") from None
    finally:
        db.close()


def _from_api(head: tuple[int, str] | None) -> dict[str, Any]:
    from baomi.controller import session as s

    try:
        session = s.load()
        lines: list[dict[str, Any]] = []
        after = 0
        while True:
            body = s.get(session, "/api/v1/log", {"after": str(after), "limit": "5000"})
            lines += body["lines"]
            if body.get("next") is None:
                break
            after = int(body["next"])
        theirs = s.get(session, "/api/v1/log/verify")
    except s.SessionError as exc:
        raise click.ClickException(str(exc)) from None
    count, last, problems = auditlog.verify(lines, (), head)
    problems += [f"the collector says: {p}" for p in theirs.get("problems", [])
                 if f"the collector says: {p}" not in problems]
    return {"ok": not problems, "lines": count, "head": f"{count}:{last}" if count else None,
            "problems": problems, "collector": session.url}


@click.command("verify-log")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--db", "database", default=None, help="Database URL (overrides the config).")
@click.option("--head", default=None, help="SEQ:HASH printed by an earlier verify-log.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_log_cmd(folder: str | None, database: str | None, head: str | None,
                   as_json: bool) -> None:
    """Check the hash-chained log of human actions (in FOLDER's database, or through the
    baomi login session's API): an edited or deleted line is named; exit 1 if any."""
    noted = _head(head)
    result = _from_database(folder, database, noted) if folder else _from_api(noted)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for problem in result["problems"]:
            click.echo(f"TAMPERED: {problem}")
        state = "intact" if result["ok"] else f"{len(result['problems'])} problems"
        click.echo(f"log {state}: {result['lines']} lines, head {result['head'] or '-'}")
    if not result["ok"]:
        raise SystemExit(1)


@click.command("import")
@click.option("--policy", "policy_path", default=None,
              help="Policy naming the collector (collector.url); default as every command.")
def import_cmd(policy_path: str | None) -> None:
    """Move this controller's local records into the collector, verified entry by entry."""
    from baomi.controller.records_remote import CollectorStore, import_local
    from baomi.records import RecordError
    from baomi.recordstore import LocalStore

    local = LocalStore()
    try:
        remote = CollectorStore.from_session(policy_path)
        report = import_local(local, remote, click.echo)
    except RecordError as exc:
        raise click.ClickException(f"{exc} (the local records are unchanged; run the import "
                                   "again once fixed: what is stored is not stored twice)") \
            from None
    total = sum(r["verified"] for r in report.values())
    click.echo(f"imported {total} records from {local.state} and {local.escrow} into "
               f"{remote.where}, each verified; set collector.records: collector in the "
               "policy so new records go there")
