"""What the collector does with its database: each function runs inside one transaction.

Ingest is the hot path: one batch = one transaction = one range read of the agent's already
stored sequence numbers, one ``executemany`` into the event log and one ``executemany`` upsert
into the current-state table ``findings`` (one row per host, check, subject). Reading "what is
open now" never scans the event log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from baomi.clauses import CLAUSES
from baomi.collector import auditlog, credentials
from baomi.collector.db import Tx
from baomi.collector.validate import Event, FindingQuery, Invalid, finding_key, format_time
from baomi.collector.waiving import NO_WAIVERS, Judge
from baomi.findings import SEVERITY_RANK

ACTIVE_SECONDS = 600


class Unauthorized(Exception):
    """Missing, unknown, expired or revoked credential (401)."""


class Forbidden(Exception):
    """A valid credential without the right to do this (403)."""


class NotFound(Exception):
    """No such object (404)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agent (``role`` = "agent", ``host``), a person, or Prometheus."""

    role: str
    name: str
    agent_id: int = 0
    host: str = ""
    token: str = ""


# ---- people -------------------------------------------------------------------------------

def bootstrap_admin(tx: Tx, user: str, pw_hash: str) -> bool:
    """Create the first `it` user from the config when there is no user at all."""
    if not pw_hash or tx.one("SELECT 1 FROM users LIMIT 1"):
        return False
    tx.run("INSERT INTO users (name, role, pw, created) VALUES (?, 'it', ?, ?)",
           (user, pw_hash, time.time()))
    return True


def user_hash(tx: Tx, user: str) -> tuple[str, str] | None:
    row = tx.one("SELECT pw, role FROM users WHERE name = ?", (user,))
    return (row[0], row[1]) if row else None


def new_session(tx: Tx, user: str, role: str, hours: float) -> dict[str, Any]:
    token = credentials.new_token(credentials.SESSION)
    now = time.time()
    expires = now + hours * 3600
    tx.run("DELETE FROM sessions WHERE expires < ?", (now,))
    tx.run("INSERT INTO sessions (token, name, role, expires) VALUES (?, ?, ?, ?)",
           (credentials.digest(token), user, role, expires))
    auditlog.append(tx, user, role, "login", {})  # every human action is logged (R-AUD)
    return {"token": token, "user": user, "role": role, "expires": format_time(expires)}


def session_info(tx: Tx, principal: Principal) -> dict[str, Any]:
    row = tx.one("SELECT expires FROM sessions WHERE token = ?", (principal.token,))
    return {"user": principal.name, "role": principal.role,
            "expires": format_time(row[0]) if row else None}


def end_session(tx: Tx, principal: Principal) -> None:
    tx.run("DELETE FROM sessions WHERE token = ?", (principal.token,))
    auditlog.append(tx, principal.name, principal.role, "logout", {})


def authenticate(tx: Tx, token: str) -> Principal:
    """A bearer token → who it is (Unauthorized if unknown, expired or revoked)."""
    key = credentials.digest(token)
    if token.startswith(credentials.AGENT):
        row = tx.one("SELECT id, host, revoked FROM agents WHERE token = ?", (key,))
        if row is None or row[2] is not None:
            raise Unauthorized("unknown or revoked agent credential")
        return Principal("agent", row[1], agent_id=int(row[0]), host=row[1], token=key)
    if token.startswith(credentials.SESSION):
        row = tx.one("SELECT name, role, expires FROM sessions WHERE token = ?", (key,))
        if row is None or row[2] < time.time():
            raise Unauthorized("unknown or expired session; log in again")
        return Principal(row[1], row[0], token=key)
    raise Unauthorized("unknown credential")


def list_users(tx: Tx) -> list[dict[str, Any]]:
    return [{"user": n, "role": r, "created": format_time(c)}
            for n, r, c in tx.all("SELECT name, role, created FROM users ORDER BY name")]


def add_user(tx: Tx, user: str, pw_hash: str, role: str, by: str = "") -> dict[str, Any]:
    if tx.one("SELECT 1 FROM users WHERE name = ?", (user,)):
        raise Invalid(f"user {user!r} already exists", 409)
    now = time.time()
    tx.run("INSERT INTO users (name, role, pw, created) VALUES (?, ?, ?, ?)",
           (user, role, pw_hash, now))
    if by:  # a person added them (not the first admin from the config)
        auditlog.append(tx, by, "it", "user.add", {"user": user, "role": role})
    return {"user": user, "role": role, "created": format_time(now)}


def delete_user(tx: Tx, user: str, by: str) -> None:
    """Delete a person, never the caller: another `it` user does that, so at least one `it`
    user always remains."""
    if tx.one("SELECT 1 FROM users WHERE name = ?", (user,)) is None:
        raise NotFound(f"user {user!r} not found")
    if user == by:
        raise Invalid(f"user {user!r} cannot delete their own account", 409)
    tx.run("DELETE FROM sessions WHERE name = ?", (user,))
    tx.run("DELETE FROM users WHERE name = ?", (user,))
    auditlog.append(tx, by, "it", "user.delete", {"user": user})


# ---- enrolment ----------------------------------------------------------------------------

def new_enrol_token(tx: Tx, by: str, host: str | None, one_time: bool,
                    expires_in: int | None) -> dict[str, Any]:
    token = credentials.new_token(credentials.ENROL)
    now = time.time()
    expires = now + expires_in if expires_in is not None else None
    tx.run("INSERT INTO enrol_tokens (token, host, one_time, expires, created, created_by) "
           "VALUES (?, ?, ?, ?, ?, ?)",
           (credentials.digest(token), host, int(one_time), expires, now, by))
    row = tx.one("SELECT id FROM enrol_tokens WHERE token = ?", (credentials.digest(token),))
    assert row is not None  # noqa: S101 checked in this transaction
    auditlog.append(tx, by, "it", "enrol_token.new", {"id": int(row[0]), "host": host})
    return {"id": int(row[0]), "token": token, "host": host, "one_time": one_time,
            "expires": format_time(expires)}


def list_enrol_tokens(tx: Tx) -> list[dict[str, Any]]:
    rows = tx.all("SELECT id, host, one_time, expires, created, created_by, used, revoked "
                  "FROM enrol_tokens ORDER BY id")
    return [{"id": int(i), "host": h, "one_time": bool(o), "expires": format_time(e),
             "created": format_time(c), "created_by": b, "used": int(u), "revoked": bool(r)}
            for i, h, o, e, c, b, u, r in rows]


def revoke_enrol_token(tx: Tx, token_id: int, by: str = "") -> None:
    if tx.run("UPDATE enrol_tokens SET revoked = 1 WHERE id = ?", (token_id,)) == 0:
        raise NotFound(f"enrolment token {token_id} not found")
    if by:
        auditlog.append(tx, by, "it", "enrol_token.revoke", {"id": token_id})


def enroll(tx: Tx, token: str, host: str) -> dict[str, Any]:
    """Spend an enrolment token for ``host``: a new agent credential; the host's earlier
    agents are revoked (one live credential per host)."""
    now = time.time()
    row = tx.one("SELECT id, host, one_time, expires, used, revoked FROM enrol_tokens "
                 "WHERE token = ?", (credentials.digest(token),))
    if row is None:
        raise Unauthorized("unknown enrolment token")
    token_id, bound, one_time, expires, used, revoked = row
    if revoked:
        raise Unauthorized("enrolment token revoked")
    if expires is not None and expires < now:
        raise Unauthorized("enrolment token expired")
    if one_time and used:
        raise Unauthorized("enrolment token already used")
    if bound is not None and bound != host:
        raise Forbidden(f"enrolment token is for host {bound!r}, not {host!r}")
    # One use: only the transaction that flips `used` from 0 may enrol with a one-time token.
    spent = tx.run("UPDATE enrol_tokens SET used = used + 1 WHERE id = ? AND (one_time = 0 "
                   "OR used = 0)", (token_id,))
    if spent == 0:
        raise Unauthorized("enrolment token already used")
    tx.run("UPDATE agents SET revoked = ? WHERE host = ? AND revoked IS NULL", (now, host))
    credential = credentials.new_token(credentials.AGENT)
    tx.run("INSERT INTO agents (host, token, enrolled, enrol_token) VALUES (?, ?, ?, ?)",
           (host, credentials.digest(credential), now, token_id))
    agent = tx.one("SELECT id FROM agents WHERE token = ?", (credentials.digest(credential),))
    assert agent is not None  # noqa: S101 checked in this transaction
    return {"agent_id": int(agent[0]), "host": host, "credential": credential}


_AGENT_COLUMNS = ("id, host, enrolled, revoked, last_seen, acked_seq, max_seq, events, "
                  "health, heartbeat")


def _agent_state(revoked: float | None, last_seen: float | None, now: float) -> str:
    if revoked is not None:
        return "revoked"
    if last_seen is None:
        return "new"
    return "active" if now - last_seen < ACTIVE_SECONDS else "silent"


def _gaps(tx: Tx, agent_id: int, acked: int, max_seq: int, limit: int = 100) -> list[list[int]]:
    """Missing ranges [first, last] above ``acked`` (at most ``limit``)."""
    if max_seq <= acked:
        return []
    gaps: list[list[int]] = []
    expect = acked + 1
    after = acked
    while len(gaps) < limit:
        rows = tx.all("SELECT seq FROM events WHERE agent_id = ? AND seq > ? ORDER BY seq "
                      "LIMIT 5000", (agent_id, after))
        if not rows:
            break
        for (seq,) in rows:
            if seq > expect:
                gaps.append([expect, seq - 1])
                if len(gaps) >= limit:
                    break
            expect = seq + 1
        after = rows[-1][0]
    return gaps


def _agent_dict(tx: Tx, row: tuple[Any, ...], now: float) -> dict[str, Any]:
    agent_id, host, enrolled, revoked, last_seen, acked, max_seq, events, health, beat = row
    return {"id": int(agent_id), "host": host, "state": _agent_state(revoked, last_seen, now),
            "enrolled": format_time(enrolled), "last_seen": format_time(last_seen),
            "acked_seq": int(acked), "max_seq": int(max_seq),
            "missing": int(max_seq) - int(events), "gaps": _gaps(tx, agent_id, acked, max_seq),
            "events": int(events), "health": json.loads(health) if health else None,
            "heartbeat": format_time(beat)}


def list_agents(tx: Tx) -> list[dict[str, Any]]:
    now = time.time()
    return [_agent_dict(tx, row, now)
            for row in tx.all(f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY id")]


def revoke_agent(tx: Tx, agent_id: int, by: str = "") -> dict[str, Any]:
    tx.run("UPDATE agents SET revoked = ? WHERE id = ? AND revoked IS NULL",
           (time.time(), agent_id))
    row = tx.one(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,))
    if row is None:
        raise NotFound(f"agent {agent_id} not found")
    if by:
        auditlog.append(tx, by, "it", "agent.revoke", {"id": agent_id, "host": row[1]})
    return _agent_dict(tx, row, time.time())


def agents_by_state(tx: Tx) -> dict[str, int]:
    now = time.time()
    counts = {"new": 0, "active": 0, "silent": 0, "revoked": 0}
    for revoked, last_seen in tx.all("SELECT revoked, last_seen FROM agents"):
        counts[_agent_state(revoked, last_seen, now)] += 1
    return counts


# ---- ingest -------------------------------------------------------------------------------

INSERT_EVENT = ("INSERT INTO events (agent_id, seq, id, host, ts, received, kind, fkey, "
                 "severity, found, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

# The current state, newest event wins (``WHERE``): batches may arrive in any order.
_KEEP_IF_RESOLVED = ("control", "clauses", "severity", "rank", "expected", "found", "details")
UPSERT_FINDING = (
    "INSERT INTO findings (host, check_id, subject, control, clauses, severity, rank, "
    "expected, found, details, state, first_seen, last_seen, resolved_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (host, check_id, subject) DO UPDATE SET "
    + ", ".join(f"{c} = CASE WHEN excluded.state = 'resolved' THEN findings.{c} "
                f"ELSE excluded.{c} END" for c in _KEEP_IF_RESOLVED)
    + ", state = CASE WHEN excluded.state = 'resolved' THEN 'resolved' "
    "WHEN findings.state = 'acknowledged' THEN 'acknowledged' ELSE 'open' END"
    + "".join(f", {c} = CASE WHEN findings.state = 'resolved' AND excluded.state = 'open' "
              f"THEN NULL ELSE findings.{c} END" for c in ("ack_by", "ack_at", "ack_comment"))
    + ", last_seen = excluded.last_seen, resolved_at = excluded.resolved_at "
    "WHERE excluded.last_seen >= findings.last_seen")


def ingest(tx: Tx, agent_id: int, events: list[Event], now: float) -> dict[str, Any]:
    """Store a validated batch of one agent; the acknowledgement (see docs/collector-api.md)."""
    tx.lock(agent_id)
    row = tx.one("SELECT host, revoked, acked_seq, max_seq, events FROM agents WHERE id = ?",
                 (agent_id,))
    if row is None or row[1] is not None:
        raise Unauthorized("agent credential revoked")
    host, _, acked, max_seq, total = row
    seqs = [e.seq for e in events]
    stored = dict(tx.all("SELECT seq, id FROM events WHERE agent_id = ? AND seq BETWEEN ? "
                         "AND ?", (agent_id, min(seqs), max(seqs))))
    new: list[Event] = []
    for event in events:
        known = stored.get(event.seq)
        if known is None:
            new.append(event)
        elif known != event.id:
            raise Invalid(f"seq {event.seq} is already stored with another event id "
                          f"({known}); the agent's numbering is broken", 409)
    if new:
        event_rows = []
        finding_rows = []
        for e in new:
            fkey = None
            if e.check is not None and e.subject is not None:
                fkey = finding_key(host, e.check, e.subject)
                resolved = e.kind == "resolved"
                finding_rows.append((
                    host, e.check, e.subject, e.control, e.clauses, e.severity,
                    SEVERITY_RANK[e.severity], e.expected, e.found, e.details,
                    "resolved" if resolved else "open", e.ts, e.ts, e.ts if resolved else None))
            event_rows.append((agent_id, e.seq, e.id, host, e.ts, now, e.kind, fkey,
                               e.severity if fkey is not None else None,
                               e.found if fkey is not None else None, e.data or e.details))
        tx.many(INSERT_EVENT, event_rows)
        if finding_rows:
            tx.many(UPSERT_FINDING, finding_rows)
    total += len(new)
    max_seq = max(max_seq, *seqs)
    acked = _contiguous(tx, agent_id, acked, max_seq, total, set(seqs))
    tx.run("UPDATE agents SET acked_seq = ?, max_seq = ?, events = ?, last_seen = ? "
           "WHERE id = ?", (acked, max_seq, total, now, agent_id))
    return {"acked_seq": acked, "stored": len(new), "duplicates": len(events) - len(new),
            "max_seq": max_seq, "missing": max_seq - total}


def _contiguous(tx: Tx, agent_id: int, acked: int, max_seq: int, total: int,
                batch: set[int]) -> int:
    """The highest N with every seq 1..N stored. Seqs are unique and ≥ 1, so when as many
    events are stored as the highest seq, nothing is missing; otherwise walk up from the
    previous answer through this batch and then through what is stored above it."""
    if total == max_seq:
        return max_seq
    while acked + 1 in batch:
        acked += 1
    while acked < max_seq:
        rows = tx.all("SELECT seq FROM events WHERE agent_id = ? AND seq > ? ORDER BY seq "
                      "LIMIT 5000", (agent_id, acked))
        progressed = False
        for (seq,) in rows:
            if seq != acked + 1:
                return acked
            acked = seq
            progressed = True
        if not progressed or len(rows) < 5000:
            return acked
    return acked


def heartbeat(tx: Tx, agent_id: int, figures: str, now: float) -> dict[str, Any]:
    row = tx.one("SELECT host, revoked, acked_seq FROM agents WHERE id = ?", (agent_id,))
    if row is None or row[1] is not None:
        raise Unauthorized("agent credential revoked")
    tx.run("UPDATE agents SET health = ?, heartbeat = ?, last_seen = ? WHERE id = ?",
           (figures, now, now, agent_id))
    work = [{"id": int(i), "kind": k, "payload": json.loads(p), "created": format_time(c)}
            for i, k, p, c in tx.all("SELECT id, kind, payload, created FROM work "
                                     "WHERE host = ? AND done IS NULL ORDER BY id", (row[0],))]
    return {"work": work, "acked_seq": int(row[2])}


# ---- findings -----------------------------------------------------------------------------

_FINDING_COLUMNS = ("id, host, check_id, control, clauses, severity, subject, expected, found, "
                    "details, state, first_seen, last_seen, resolved_at, ack_by, ack_at, "
                    "ack_comment")


def _finding_dict(row: tuple[Any, ...], judge: Judge = NO_WAIVERS) -> dict[str, Any]:
    """A finding of the API; ``waived``/``waiver`` are decided now by ``judge``
    (:mod:`baomi.collector.waiving`), never stored."""
    (fid, host, check, control, clauses, severity, subject, expected, found, details, state,
     first, last, resolved, ack_by, ack_at, comment) = row
    return judge.mark({"id": int(fid), "host": host, "check": check, "control": control,
            "clauses": clauses.split(), "severity": severity, "subject": subject,
            "expected": expected, "found": found,
            "details": json.loads(details) if details else {}, "state": state,
            "first_seen": format_time(first), "last_seen": format_time(last),
            "resolved_at": format_time(resolved),
            "ack": {"by": ack_by, "at": format_time(ack_at), "comment": comment}
            if ack_by is not None else None})


def find(tx: Tx, q: FindingQuery, judge: Judge = NO_WAIVERS) -> dict[str, Any]:
    """A page of findings. ``waived`` is decided after the SQL filters (it is not stored), so
    with that filter the rows are read in chunks until the page is full."""
    where = ["id > ?"]
    params: list[Any] = [q.after]
    for column, value in (("host", q.host), ("state", q.state), ("check_id", q.check)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if q.clause is not None:
        where.append("clauses LIKE ?")
        params.append(f"% {q.clause} %")
    if q.min_rank is not None:
        where.append("rank >= ?")
        params.append(q.min_rank)
    if q.since is not None:
        where.append("last_seen >= ?")
        params.append(q.since)
    sql = (f"SELECT {_FINDING_COLUMNS} FROM findings WHERE {' AND '.join(where)} "
           f"ORDER BY id LIMIT ?")
    if q.waived is None:
        rows = tx.all(sql, (*params, q.limit + 1))
        found = [_finding_dict(r, judge) for r in rows[:q.limit]]
        return {"findings": found, "next": found[-1]["id"] if len(rows) > q.limit else None}
    found, more, chunk = [], False, max(q.limit + 1, 500)
    while True:
        rows = tx.all(sql, (*params, chunk))
        for row in rows:
            item = _finding_dict(row, judge)
            if item["waived"] == q.waived:
                if len(found) == q.limit:
                    more = True
                    break
                found.append(item)
        if more or len(rows) < chunk:
            break
        params[0] = int(rows[-1][0])  # the next chunk: after the last id read
    return {"findings": found, "next": found[-1]["id"] if more else None}


def finding(tx: Tx, finding_id: int, history: bool = True,
            judge: Judge = NO_WAIVERS) -> dict[str, Any]:
    row = tx.one(f"SELECT {_FINDING_COLUMNS} FROM findings WHERE id = ?", (finding_id,))
    if row is None:
        raise NotFound(f"finding {finding_id} not found")
    result = _finding_dict(row, judge)
    if history:
        key = finding_key(result["host"], result["check"], result["subject"])
        timed: list[tuple[float, dict[str, Any]]] = [
            (ts, {"kind": kind, "ts": format_time(ts), "received": format_time(received),
                  "severity": severity, "found": found, "event_id": event_id})
            for kind, ts, received, severity, found, event_id in tx.all(
                "SELECT kind, ts, received, severity, found, id FROM events "
                "WHERE fkey = ? AND host = ? ORDER BY ts DESC LIMIT 1000",
                (key, result["host"]))]
        timed += [(at, {"kind": "ack", "ts": format_time(at), "received": format_time(at),
                        "by": by, "comment": comment})
                  for by, at, comment in tx.all("SELECT by_user, at, comment FROM acks "
                                                "WHERE finding_id = ? ORDER BY id",
                                                (finding_id,))]
        timed.sort(key=lambda pair: pair[0])
        items = [item for _, item in timed]
        result["history"] = items
    return result


def acknowledge(tx: Tx, finding_id: int, by: str, comment: str) -> dict[str, Any]:
    row = tx.one("SELECT state FROM findings WHERE id = ?", (finding_id,))
    if row is None:
        raise NotFound(f"finding {finding_id} not found")
    if row[0] == "resolved":
        raise Invalid(f"finding {finding_id} is resolved; nothing to acknowledge", 409)
    now = time.time()
    tx.run("UPDATE findings SET state = 'acknowledged', ack_by = ?, ack_at = ?, "
           "ack_comment = ? WHERE id = ?", (by, now, comment, finding_id))
    tx.run("INSERT INTO acks (finding_id, by_user, at, comment) VALUES (?, ?, ?, ?)",
           (finding_id, by, now, comment))
    auditlog.append(tx, by, "it", "finding.ack", {"finding": finding_id, "comment": comment})
    return finding(tx, finding_id, history=False)


def hosts(tx: Tx, judge: Judge = NO_WAIVERS) -> list[dict[str, Any]]:
    """Hosts with their agent and counts of findings; a waived finding (open or acknowledged,
    waived today by the policy) counts in ``waived`` only, not in ``open``/``acknowledged``."""
    now = time.time()
    result: dict[str, dict[str, Any]] = {}

    def entry(host: str) -> dict[str, Any]:
        return result.setdefault(host, {
            "host": host, "agent_id": None, "agent_state": None, "last_seen": None,
            "acked_seq": None, "missing": None, "open": dict.fromkeys(SEVERITY_RANK, 0),
            "acknowledged": 0, "resolved": 0, "waived": 0})

    for agent_id, host, revoked, last_seen, acked, max_seq, total in tx.all(
            "SELECT id, host, revoked, last_seen, acked_seq, max_seq, events FROM agents "
            "ORDER BY id"):
        item = entry(host)
        if item["agent_state"] in (None, "revoked"):
            item.update(agent_id=int(agent_id),
                        agent_state=_agent_state(revoked, last_seen, now),
                        last_seen=format_time(last_seen), acked_seq=int(acked),
                        missing=int(max_seq) - int(total))
    for host, state, severity, check, clauses, count in tx.all(
            "SELECT host, state, severity, check_id, clauses, COUNT(*) FROM findings "
            "GROUP BY host, state, severity, check_id, clauses"):
        item = entry(host)
        if judge.decision(host, check, clauses.split(), state).waived:
            item["waived"] += int(count)
        elif state == "open":
            item["open"][severity] += int(count)
        else:
            item[state] += int(count)
    return [result[h] for h in sorted(result)]


def summary(tx: Tx, judge: Judge = NO_WAIVERS) -> dict[str, Any]:
    """Compliance by clause and by host: a host fails a clause while an open or acknowledged
    finding of that host cites it and is not waived today (waived ones count in ``waived``)."""
    all_hosts = {h for (h,) in tx.all("SELECT DISTINCT host FROM agents WHERE revoked IS NULL")}
    failing: dict[str, set[str]] = {c: set() for c in CLAUSES}
    counts: dict[str, dict[str, int]] = {c: {"open": 0, "acknowledged": 0, "waived": 0}
                                         for c in CLAUSES}
    per_host: dict[str, dict[str, Any]] = {}
    for host, state, clauses, check, count in tx.all(
            "SELECT host, state, clauses, check_id, COUNT(*) FROM findings "
            "GROUP BY host, state, clauses, check_id"):
        all_hosts.add(host)
        item = per_host.setdefault(host, {"open": 0, "acknowledged": 0, "waived": 0,
                                          "clauses": set()})
        if state == "resolved":
            continue
        waived = judge.decision(host, check, clauses.split(), state).waived
        item["waived" if waived else state] += int(count)
        for clause in clauses.split():
            if clause in failing:
                counts[clause]["waived" if waived else state] += int(count)
                if not waived:
                    failing[clause].add(host)
                    item["clauses"].add(clause)
    total = len(all_hosts)
    by_clause = [{"clause": c, "title": CLAUSES[c].title, "hosts_failing": len(failing[c]),
                  "hosts_compliant": total - len(failing[c]), **counts[c]} for c in CLAUSES]
    by_host = []
    for host in sorted(all_hosts):
        item = per_host.get(host, {"open": 0, "acknowledged": 0, "waived": 0,
                                   "clauses": set()})
        by_host.append({"host": host, "compliant": not item["clauses"],
                        "failing_clauses": sorted(item["clauses"]), "open": item["open"],
                        "acknowledged": item["acknowledged"], "waived": item["waived"]})
    return {"hosts": total, "by_clause": by_clause, "by_host": by_host}
