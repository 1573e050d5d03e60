"""Alert rules, the silent-agent sweep and login throttling on a real SQLite database of the
collector's schema (times passed in: no sleeping). The delivery itself (webhook, syslog, a
killed collector) is tested against real processes in tests/collector/test_alerts.py."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baomi.collector import alerts, store, throttle
from baomi.collector.db import Database
from baomi.collector.validate import Invalid, parse_batch
from baomi.policy import PolicyError, load_text

NOW = 1_796_200_000.0
SETTINGS = alerts.Settings(min_severity="high", webhook="http://127.0.0.1:9/hook",
                           syslog_socket="/dev/log", silent_minutes=10)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    made = Database(f"sqlite:///{tmp_path}/c.db")
    made.migrate()
    try:
        yield made
    finally:
        made.close()


def agent(db: Database, host: str, seen: float | None) -> int:
    def enrol(tx: Any) -> int:
        tx.run("INSERT INTO agents (host, token, enrolled, last_seen) VALUES (?, ?, ?, ?)",
               (host, f"t-{host}", NOW - 3600, seen))
        row = tx.one("SELECT id FROM agents WHERE host = ?", (host,))
        return int(row[0])
    return db.transaction(enrol)


def send(db: Database, agent_id: int, *events: tuple[int, str, str, str]) -> int:
    batch = parse_batch({"events": [
        {"id": f"00000000-0000-4000-8000-{seq:012d}", "seq": seq,
         "ts": f"2026-12-02T10:00:{seq:02d}+00:00", "kind": kind,
         "finding": {"check": check, "clauses": ["R-TLS"], "severity": severity,
                     "subject": "s", "expected": "no", "found": "yes"}}
        for seq, kind, check, severity in events]})
    return db.transaction(lambda tx: alerts.ingest(tx, agent_id, batch, NOW, SETTINGS))[1]


def test_a_finding_alerts_once_per_episode_and_only_at_or_above_the_threshold(
        db: Database) -> None:
    a = agent(db, "h1", NOW)
    assert send(db, a, (1, "finding", "ssh.root", "critical"), (2, "finding", "usb.x", "medium"),
                (3, "finding", "fw.x", "high")) == 2
    assert send(db, a, (4, "finding", "ssh.root", "critical")) == 0  # re-reported
    assert send(db, a, (5, "resolved", "ssh.root", "critical")) == 0
    assert send(db, a, (6, "finding", "ssh.root", "critical")) == 1  # reopened
    listed = db.transaction(lambda tx: alerts.listing(tx, None, 0, 100))["alerts"]
    assert sorted(x["check"] for x in listed) == ["fw.x", "ssh.root", "ssh.root"]
    assert all(x["webhook"]["state"] == "pending" and x["syslog"]["state"] == "pending"
               and x["state"] == "open" for x in listed)


def test_acknowledging_closes_the_alerts_of_a_finding_even_after_it_resolved(
        db: Database) -> None:
    a = agent(db, "h1", NOW)
    send(db, a, (1, "finding", "ssh.root", "critical"))
    send(db, a, (2, "resolved", "ssh.root", "critical"))
    fid = db.transaction(lambda tx: alerts.listing(tx, None, 0, 10))["alerts"][0]["finding_id"]
    done = db.transaction(lambda tx: alerts.acknowledge(tx, fid, "it1", "rotated"))
    assert done["state"] == "resolved"
    (listed,) = db.transaction(lambda tx: alerts.listing(tx, "acknowledged", 0, 10))["alerts"]
    assert listed["ack"]["by"] == "it1" and listed["ack"]["comment"] == "rotated"
    assert db.transaction(lambda tx: alerts.listing(tx, "open", 0, 10))["alerts"] == []
    with pytest.raises(Invalid):  # nothing open any more: the finding's own 409
        db.transaction(lambda tx: alerts.acknowledge(tx, fid, "it1", "again"))


def test_silent_agents_open_and_clear_by_the_policy_limit(db: Database) -> None:
    quiet = agent(db, "quiet", NOW - 11 * 60)
    agent(db, "fresh", NOW - 9 * 60)
    agent(db, "never", None)  # enrolled an hour ago, never heard
    assert db.transaction(lambda tx: alerts.sweep(tx, SETTINGS, NOW)) == 2
    assert db.transaction(lambda tx: alerts.sweep(tx, SETTINGS, NOW + 1)) == 0  # no repeat
    open_ = db.transaction(lambda tx: [r for r in tx.all(
        "SELECT host, state, clauses, severity FROM findings WHERE check_id = 'agent.silent'")])
    assert sorted(open_) == [("never", "open", " R-FIM R-LOG ", "high"),
                             ("quiet", "open", " R-FIM R-LOG ", "high")]
    db.transaction(lambda tx: store.heartbeat(tx, quiet, "{}", NOW + 2))
    db.transaction(lambda tx: alerts.sweep(tx, SETTINGS, NOW + 3))
    states = dict(db.transaction(lambda tx: tx.all(
        "SELECT host, state FROM findings WHERE check_id = 'agent.silent'")))
    assert states == {"quiet": "resolved", "never": "open"}
    low = alerts.Settings(min_severity="critical", silent_minutes=10, silent_severity="high")
    db.transaction(lambda tx: tx.run("UPDATE agents SET last_seen = ? WHERE id = ?",
                                     (NOW - 3600, quiet)))
    assert db.transaction(lambda tx: alerts.sweep(tx, low, NOW + 4)) == 0  # below threshold


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rand = random.Random(1)
    for attempts, base in ((1, 1), (2, 2), (3, 4), (9, 256), (20, 300)):
        for _ in range(50):
            assert base * 0.5 <= alerts.backoff(attempts, 300, rand) < base * 1.5


def test_the_syslog_line_names_the_clause_and_no_evidence() -> None:
    payload = ('{"id": 7, "host": "srv1", "check": "ssh.permit_root_login", "severity": '
               '"critical", "clauses": ["R-TLS"], "found": "secret-ish evidence"}')
    line = alerts.syslog_line(payload, 3).decode()
    assert line.startswith("<34>baomi-collector[")
    assert "R-INC alert 3: critical finding ssh.permit_root_login on host srv1" in line
    assert "evidence" not in line


def test_throttle_locks_a_user_then_an_address(db: Database) -> None:
    limits = throttle.Limits(per_user=2, per_address=3, window_seconds=60, lockout_seconds=60)
    for _ in range(2):
        db.transaction(lambda tx: throttle.check(tx, "ann", "10.0.0.1", NOW))
        db.transaction(lambda tx: throttle.failed(tx, "ann", "10.0.0.1", limits, NOW))
    with pytest.raises(throttle.Locked, match="user 'ann'"):
        db.transaction(lambda tx: throttle.check(tx, "ann", "10.0.0.2", NOW + 1))
    db.transaction(lambda tx: throttle.check(tx, "ann", "10.0.0.2", NOW + 61))  # expired
    db.transaction(lambda tx: throttle.failed(tx, "bob", "10.0.0.1", limits, NOW + 2))
    with pytest.raises(throttle.Locked, match=r"address 10\.0\.0\.1"):
        db.transaction(lambda tx: throttle.check(tx, "cy", "10.0.0.1", NOW + 3))


def test_policy_webhook_is_tls_or_loopback() -> None:
    base = "organisation: t\ncollector:\n  alert_webhook: "
    assert load_text(base + '"http://127.0.0.1:8080/h"\n').collector.alert_webhook
    assert load_text(base + '"https://chat.example/h"\n').collector.alert_webhook
    with pytest.raises(PolicyError, match="http:// only to loopback"):
        load_text(base + '"http://chat.example/h"\n')


def test_a_waived_finding_does_not_alert_and_alerts_once_its_waiver_expired(
        db: Database) -> None:
    """The waivers' one decision (baomi.waivers, through the collector's Judge): a finding a
    live waiver covers is stored (and shown as waived) but pages nobody; the same finding
    re-reported after the waiver expired alerts; a host the waiver does not name alerts."""
    import datetime as dt

    from baomi.collector.waiving import Judge

    policy = load_text("waivers:\n  - clause: R-TLS\n    hosts: [h1]\n    reason: legacy\n"
                       "    approver: 李总\n    expires: 2026-12-02\n", "p.yaml",
                       today=dt.date(2026, 12, 2))
    live = Judge(policy, {}, dt.date(2026, 12, 2))
    expired = Judge(policy, {}, dt.date(2026, 12, 3))

    def sent(agent_id: int, seq: int, judge: Judge) -> int:
        batch = parse_batch({"events": [{
            "id": f"00000000-0000-4000-{agent_id:04d}-{seq:012d}", "seq": seq,
            "ts": f"2026-12-02T10:00:{seq:02d}+00:00", "kind": "finding",
            "finding": {"check": "ssh.root", "clauses": ["R-TLS"], "severity": "critical",
                        "subject": "s", "expected": "no", "found": "yes"}}]})
        return db.transaction(
            lambda tx: alerts.ingest(tx, agent_id, batch, NOW, SETTINGS, judge))[1]

    h1, h2 = agent(db, "h1", NOW), agent(db, "h2", NOW)
    assert sent(h1, 1, live) == 0  # waived: stored, no alert
    assert sent(h2, 1, live) == 1  # the waiver does not name h2
    assert sent(h1, 2, expired) == 1  # the day after it expired: the re-report alerts
    assert sent(h1, 3, expired) == 0  # and once per episode, as any finding
