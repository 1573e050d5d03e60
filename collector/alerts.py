"""Alerts (R-INC): a finding at or above the policy's ``alert_min_severity`` is reported at once.

Why an outbox: the webhook's receiver may be down for hours and the collector may restart in
between; an alert is a row of ``alerts`` written in the SAME transaction as the finding that
caused it, so nothing that was stored can miss its alert. A dispatcher task of every
collector process then

- writes one syslog line per alert at once (a datagram to the local syslog socket, naming the
  clause), and
- POSTs the alert as JSON to the webhook until it answers 2xx, retrying with exponential
  backoff and jitter. A row is claimed with a lease before the POST, so several collectors on
  one PostgreSQL database do not POST it together; a crash between the POST and the mark
  sends it again after the lease: delivery is AT LEAST ONCE, and the receiver de-duplicates by
  ``alert_id`` (also in the ``Idempotency-Key`` header).

``alert_state`` holds one row per finding that has alerted and is not resolved since: a
finding re-reported by every rescan alerts once; resolved and reopened, it alerts again. An
alert stays listed as open until someone acknowledges its finding (``POST
/api/v1/findings/{id}/ack``), even when the finding resolved meanwhile.

An agent silent longer than ``agent_silent_minutes`` is itself a finding (``agent.silent``,
R-FIM and R-LOG: nothing watches that host's files or ships its logs), with the policy's
severity; it resolves when the agent is heard again.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

from baomi.collector import store
from baomi.collector.config import Config
from baomi.collector.db import Tx
from baomi.collector.validate import MAX_ID, Event, Invalid, format_time
from baomi.collector.waiving import NO_WAIVERS, Judge
from baomi.findings import SEVERITY_RANK

CLAUSE = "R-INC"
SILENT_CHECK = "agent.silent"
SILENT_CLAUSES = " R-FIM R-LOG "
SILENT_SUBJECT = "agent reports to the collector"
LEASE_SECONDS = 30.0
_SWEEP_LOCK = 0x616C657274  # "alert": one silent-agent sweep at a time (PostgreSQL)
# syslog severities (RFC 5424) by finding severity; facility "auth" (4): security messages.
_SYSLOG_LEVEL = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
_FACILITY = 4


@dataclass(frozen=True)
class Settings:
    """What the collector's configuration (or the policy given to ``serve --policy``) says."""

    min_severity: str = "critical"
    webhook: str = ""  # "" = no webhook
    syslog_socket: str = "/dev/log"  # "" = no syslog
    silent_minutes: float = 30.0
    silent_severity: str = "high"
    retry_max_seconds: float = 300.0

    @property
    def min_rank(self) -> int:
        return SEVERITY_RANK[self.min_severity]


def backoff(attempts: int, cap: float, rand: random.Random | None = None) -> float:
    """Seconds before the next POST after ``attempts`` failures: 1, 2, 4 ... up to ``cap``,
    each times a random factor in [0.5, 1.5) so collectors that failed together do not
    retry together."""
    rand = rand or random.Random()  # noqa: S311 jitter, not a secret
    return float(min(cap, 2.0 ** max(0, attempts - 1)) * (0.5 + rand.random()))


# ---- in the ingest transaction --------------------------------------------------------------

def enqueue(tx: Tx, finding_id: int, kind: str, settings: Settings, now: float) -> int | None:
    """An alert for ``finding_id`` unless it already alerted since it last resolved; its id."""
    claimed = tx.run("INSERT INTO alert_state (finding_id, created) VALUES (?, ?) "
                     "ON CONFLICT (finding_id) DO NOTHING", (finding_id, now))
    if claimed == 0:
        return None
    found = store.finding(tx, finding_id, history=False)
    tx.run("INSERT INTO alerts (finding_id, kind, host, check_id, severity, clauses, created, "
           "payload, webhook_state, attempts, next_try, syslog_state) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
           (finding_id, kind, found["host"], found["check"], found["severity"],
            " " + " ".join(found["clauses"]) + " ", now, json.dumps(found),
            "pending" if settings.webhook else "off", now if settings.webhook else None,
            "pending" if settings.syslog_socket else "off"))
    row = tx.one("SELECT MAX(id) FROM alerts WHERE finding_id = ?", (finding_id,))
    return int(row[0]) if row and row[0] is not None else None


def after_ingest(tx: Tx, host: str, events: list[Event], settings: Settings,
                 now: float, judge: Judge = NO_WAIVERS) -> int:
    """Alerts for a stored batch of ``host``: new alerts made (resolutions re-arm).  A finding
    the policy's waivers waive today does not alert (``judge``: the same decision the API,
    the dashboard and the audit show); re-reported after its waiver expired, it does."""
    resolved = {(e.check, e.subject) for e in events
                if e.kind == "resolved" and e.check is not None and e.subject is not None}
    if resolved:
        tx.many("DELETE FROM alert_state WHERE finding_id IN (SELECT id FROM findings WHERE "
                "host = ? AND check_id = ? AND subject = ? AND state = 'resolved')",
                [(host, c, s) for c, s in sorted(resolved, key=str)])
    loud = {(e.check, e.subject) for e in events
            if e.kind != "resolved" and e.check is not None and e.subject is not None
            and SEVERITY_RANK[e.severity] >= settings.min_rank}
    made = 0
    for check, subject in sorted(loud, key=str):
        row = tx.one("SELECT id, state, rank, clauses FROM findings WHERE host = ? AND "
                     "check_id = ? AND subject = ?", (host, check, subject))
        if not row or row[1] == "resolved" or int(row[2]) < settings.min_rank:
            continue
        if judge.decision(host, check, str(row[3]).split(), str(row[1])).waived:
            continue
        if enqueue(tx, int(row[0]), "finding", settings, now) is not None:
            made += 1
    return made


def ingest(tx: Tx, agent_id: int, events: list[Event], now: float,
           settings: Settings, judge: Judge = NO_WAIVERS) -> tuple[dict[str, Any], int]:
    """:func:`store.ingest` and its alerts, one transaction; (the acknowledgement, alerts)."""
    answer = store.ingest(tx, agent_id, events, now)
    row = tx.one("SELECT host FROM agents WHERE id = ?", (agent_id,))
    assert row is not None  # noqa: S101 store.ingest checked it in this transaction
    return answer, after_ingest(tx, row[0], events, settings, now, judge)


# ---- silent agents ------------------------------------------------------------------------

def sweep(tx: Tx, settings: Settings, now: float) -> int:
    """Open ``agent.silent`` for every live agent not heard for longer than the policy
    allows, resolve it for the others; the alerts made."""
    tx.lock(_SWEEP_LOCK)
    limit = settings.silent_minutes * 60
    last_heard = {host: (agent_id, last if last is not None else enrolled)
                  for agent_id, host, enrolled, last in tx.all(
                      "SELECT id, host, enrolled, last_seen FROM agents "
                      "WHERE revoked IS NULL ORDER BY id")}
    current = {host: (int(fid), state) for fid, host, state in tx.all(
        "SELECT id, host, state FROM findings WHERE check_id = ? AND subject = ?",
        (SILENT_CHECK, SILENT_SUBJECT))}
    made = 0
    for host in sorted(set(last_heard) | set(current)):
        fid, state = current.get(host, (0, "resolved"))
        heard = last_heard.get(host)
        silent = heard is not None and now - heard[1] > limit
        if silent and state == "resolved":
            assert heard is not None  # noqa: S101 type narrowing
            _silent_finding(tx, host, heard[0], heard[1], settings, now, open_=True)
            row = tx.one("SELECT id FROM findings WHERE host = ? AND check_id = ? AND "
                         "subject = ?", (host, SILENT_CHECK, SILENT_SUBJECT))
            assert row is not None  # noqa: S101 written just above
            if SEVERITY_RANK[settings.silent_severity] >= settings.min_rank \
                    and enqueue(tx, int(row[0]), "silent", settings, now) is not None:
                made += 1
        elif not silent and state != "resolved":
            agent_id, last = heard if heard is not None else (0, now)
            _silent_finding(tx, host, agent_id, last, settings, now, open_=False)
            tx.run("DELETE FROM alert_state WHERE finding_id = ?", (fid,))
    return made


def _silent_finding(tx: Tx, host: str, agent_id: int, last: float, settings: Settings,
                    now: float, *, open_: bool) -> None:
    details = json.dumps({"agent_id": agent_id, "last_heard": format_time(last),
                          "silent_minutes": round((now - last) / 60, 1),
                          "limit_minutes": settings.silent_minutes})
    tx.run(store.UPSERT_FINDING, (
        host, SILENT_CHECK, SILENT_SUBJECT, "agent", SILENT_CLAUSES, settings.silent_severity,
        SEVERITY_RANK[settings.silent_severity],
        f"a request at least every {settings.silent_minutes:g} min",
        f"silent since {format_time(last)}" if open_ else f"heard at {format_time(last)}",
        details, "open" if open_ else "resolved", now, now, None if open_ else now))


# ---- acknowledging and listing --------------------------------------------------------------

def acknowledge(tx: Tx, finding_id: int, by: str, comment: str) -> dict[str, Any]:
    """Acknowledge a finding and its open alerts; a resolved finding with an open alert
    accepts the acknowledgement too (the alert stays listed until someone answers it)."""
    pending = tx.one("SELECT COUNT(*) FROM alerts WHERE finding_id = ? AND ack_at IS NULL",
                     (finding_id,))
    state = tx.one("SELECT state FROM findings WHERE id = ?", (finding_id,))
    now = time.time()
    if state is not None and state[0] == "resolved" and pending and pending[0]:
        tx.run("INSERT INTO acks (finding_id, by_user, at, comment) VALUES (?, ?, ?, ?)",
               (finding_id, by, now, comment))
        result = store.finding(tx, finding_id, history=False)
    else:
        result = store.acknowledge(tx, finding_id, by, comment)
    tx.run("UPDATE alerts SET ack_by = ?, ack_at = ?, ack_comment = ? "
           "WHERE finding_id = ? AND ack_at IS NULL", (by, now, comment, finding_id))
    return result


_COLUMNS = ("a.id, a.finding_id, a.kind, a.host, a.check_id, a.severity, a.clauses, "
            "a.created, a.webhook_state, a.attempts, a.next_try, a.delivered, a.last_error, "
            "a.syslog_state, a.syslog_at, a.ack_by, a.ack_at, a.ack_comment, f.state")


def _alert_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    (aid, fid, kind, host, check, severity, clauses, created, webhook, attempts, next_try,
     delivered, error, syslog, syslog_at, ack_by, ack_at, comment, fstate) = row
    return {"id": int(aid), "finding_id": int(fid), "kind": kind, "host": host,
            "check": check, "severity": severity, "clauses": clauses.split(),
            "created": format_time(created), "finding_state": fstate,
            "state": "open" if ack_at is None else "acknowledged",
            "webhook": {"state": webhook, "attempts": int(attempts),
                        "next_try": format_time(next_try) if webhook == "pending" else None,
                        "delivered": format_time(delivered), "last_error": error},
            "syslog": {"state": syslog, "at": format_time(syslog_at)},
            "ack": {"by": ack_by, "at": format_time(ack_at), "comment": comment}
            if ack_at is not None else None}


def listing(tx: Tx, state: str | None, after: int, limit: int) -> dict[str, Any]:
    """Alerts, oldest first; ``state`` open (not acknowledged) or acknowledged."""
    where = "a.id > ?"
    if state == "open":
        where += " AND a.ack_at IS NULL"
    elif state == "acknowledged":
        where += " AND a.ack_at IS NOT NULL"
    rows = tx.all(f"SELECT {_COLUMNS} FROM alerts a JOIN findings f "  # noqa: S608 constants
                  f"ON f.id = a.finding_id WHERE {where} ORDER BY a.id LIMIT ?",
                  (after, limit + 1))
    found = [_alert_dict(r) for r in rows[:limit]]
    return {"alerts": found, "next": found[-1]["id"] if len(rows) > limit else None}


# ---- the dispatcher's database steps ---------------------------------------------------------

def syslog_due(tx: Tx) -> list[tuple[int, str]]:
    """Alerts whose syslog line is still to write, claimed (marked sent) in this transaction:
    a failed send puts them back (:func:`syslog_failed`)."""
    rows = tx.all("SELECT id, payload FROM alerts WHERE syslog_state = 'pending' ORDER BY id "
                  "LIMIT 100")
    claimed = []
    for aid, payload in rows:
        if tx.run("UPDATE alerts SET syslog_state = 'sent', syslog_at = ? WHERE id = ? AND "
                  "syslog_state = 'pending'", (time.time(), aid)):
            claimed.append((int(aid), payload))
    return claimed


def syslog_failed(tx: Tx, alert_ids: list[int]) -> None:
    tx.many("UPDATE alerts SET syslog_state = 'pending', syslog_at = NULL WHERE id = ?",
            [(a,) for a in alert_ids])


def webhook_due(tx: Tx, now: float, limit: int = 20) -> list[tuple[int, int, str]]:
    """Due webhook deliveries, each claimed for :data:`LEASE_SECONDS`: (id, attempts, body).
    Fewest attempts first: while the receiver is down, the first failure defers the rest of a
    claim (:func:`webhook_release`), so the next pass must not start with the same alert."""
    rows = tx.all("SELECT id, attempts, payload, kind, created FROM alerts "
                  "WHERE webhook_state = 'pending' AND next_try <= ? ORDER BY attempts, id "
                  "LIMIT ?", (now, limit))
    claimed = []
    for aid, attempts, payload, kind, created in rows:
        if tx.run("UPDATE alerts SET next_try = ? WHERE id = ? AND webhook_state = 'pending' "
                  "AND next_try <= ?", (now + LEASE_SECONDS, aid, now)):
            body = json.dumps({"alert_id": int(aid), "clause": CLAUSE, "kind": kind,
                               "created": format_time(created), "finding": json.loads(payload)})
            claimed.append((int(aid), int(attempts), body))
    return claimed


def webhook_done(tx: Tx, alert_id: int, now: float, error: str | None,
                 retry_at: float) -> None:
    if error is None:
        tx.run("UPDATE alerts SET webhook_state = 'delivered', delivered = ?, "
               "attempts = attempts + 1, last_error = NULL, next_try = NULL WHERE id = ?",
               (now, alert_id))
    else:
        tx.run("UPDATE alerts SET attempts = attempts + 1, last_error = ?, next_try = ? "
               "WHERE id = ? AND webhook_state = 'pending'", (error[:500], retry_at, alert_id))


def webhook_release(tx: Tx, alert_ids: list[int], retry_at: float) -> None:
    """Claimed but not tried (the receiver was found down): due again at ``retry_at``."""
    tx.many("UPDATE alerts SET next_try = ? WHERE id = ? AND webhook_state = 'pending'",
            [(retry_at, a) for a in alert_ids])


def next_due(tx: Tx) -> float | None:
    row = tx.one("SELECT MIN(next_try) FROM alerts WHERE webhook_state = 'pending'")
    return float(row[0]) if row and row[0] is not None else None


# ---- syslog -------------------------------------------------------------------------------

def syslog_line(payload: str, alert_id: int) -> bytes:
    """One RFC 3164 line: who, what, which clause; the subject and evidence stay in the
    collector (a syslog line travels further than the database)."""
    finding = json.loads(payload)
    level = _SYSLOG_LEVEL.get(finding["severity"], 4)
    text = (f"<{_FACILITY * 8 + level}>baomi-collector[{os.getpid()}]: {CLAUSE} alert "
            f"{alert_id}: {finding['severity']} finding {finding['check']} on host "
            f"{finding['host']} (clauses {' '.join(finding['clauses'])}; finding "
            f"{finding['id']}, open until acknowledged)")
    return text.encode("utf-8", "replace")[:2048]


def send_syslog(path: str, lines: list[bytes]) -> None:
    """Datagrams to the local syslog socket (OSError if it is not there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for line in lines:
            sock.sendto(line, path)


# ---- wiring -------------------------------------------------------------------------------

def settings_of(config: Config) -> Settings:
    return Settings(min_severity=config.alert_min_severity, webhook=config.alert_webhook,
                    syslog_socket=config.alert_syslog_socket,
                    silent_minutes=float(config.agent_silent_minutes),
                    silent_severity=config.agent_silent_severity,
                    retry_max_seconds=float(config.alert_retry_max_seconds))


def query(params: dict[str, str]) -> tuple[str | None, int, int]:
    """``GET /alerts`` query → (state, after, limit); anything else is a 422."""
    unknown = set(params) - {"state", "after", "limit"}
    if unknown:
        raise Invalid(f"query: unknown parameter {sorted(unknown)[0]!r}")
    state = params.get("state")
    if state not in (None, "open", "acknowledged"):
        raise Invalid("query state: expected open or acknowledged")
    numbers = []
    for name, low, high, default in (("after", 0, MAX_ID, 0), ("limit", 1, 1000, 100)):
        raw = params.get(name)
        if raw is None:
            numbers.append(default)
        elif not raw.isascii() or not raw.isdigit() or len(raw) > 19 \
                or not low <= int(raw) <= high:
            raise Invalid(f"query {name}: expected an integer {low}…{high}")
        else:
            numbers.append(int(raw))
    return state, numbers[0], numbers[1]
