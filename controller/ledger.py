"""The offboarding ledger: where ``baomi offboard`` keeps its evidence, and how it is folded.

One line per user, host and run, append-only: ``$BAOMI_STATE_DIR/offboarding/ledger.jsonl``
(0600), or the collector's ``offboarding`` stream when the policy says ``collector.records:
collector`` (baomi/recordstore.py). ``--status`` and ``--purge-due`` read it through
:func:`fold`: the latest state of each user on each host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from baomi.records import RecordError, state_dir
from baomi.recordstore import LEDGER, LocalStore, RecordStore, open_store

_POLICY: dict[str, str] = {}  # the policy this run was given (it says where records live)


def use_policy(path: str) -> None:
    """The run's policy (``--policy`` or the default) decides where the ledger is."""
    _POLICY["path"] = path


def ledger_path() -> Path:
    return state_dir() / "offboarding" / "ledger.jsonl"


def records() -> RecordStore:
    """The ledger's store: the state dir, or the collector the policy names."""
    try:
        return open_store(_POLICY.get("path"))
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None


def append(events: list[dict[str, Any]]) -> None:
    """Append events to the ledger (0600 file, or the collector); never rewrites a line.
    When the collector cannot take them, the hosts were already changed: the events go to
    the local ledger instead (``baomi collector import`` moves them later), never lost."""
    store = records()
    try:
        store.append(LEDGER, events)
    except RecordError as exc:
        if isinstance(store, LocalStore):
            raise click.ClickException(f"the ledger could not be written: {exc}") from None
        LocalStore().append(LEDGER, events)
        click.echo(f"baomi offboard: the collector did not take the ledger ({exc}); kept in "
                   f"{ledger_path()}: run baomi collector import when it is back", err=True)


def read_ledger() -> list[dict[str, Any]]:
    try:
        return records().read(LEDGER)
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None


def fold(events: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{user: {host: status}} from the ledger: the latest state, with its times."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for event in events:
        user, host, state = event.get("user"), event.get("host"), event.get("state")
        if not user or not host or not state or event.get("dry") \
                or not isinstance(event.get("time"), str):
            continue
        row = table.setdefault(user, {}).setdefault(host, {})
        if state == "frozen" and row.get("state") == "frozen":
            row["checked"] = event["time"]  # re-freeze of a frozen user: nothing changed
            continue
        if state == "waiting":
            row["checked"] = event["time"]
            row["due"] = event.get("due") or row.get("due")
            continue
        row.update(state=state, since=event["time"], error=event.get("error"))
        for key in ("ticket", "due", "effective", "archive", "operator"):
            if event.get(key):
                row[key] = event[key]
        if state == "frozen":
            row["frozen_at"] = event["time"]
        if state == "deleted":
            row["deleted_at"] = event["time"]
    return table
