"""The collector's pure parts (validation, limits, metrics, credentials, config) and its store
on a real SQLite file (migrations, contiguous acknowledgement across pages)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from baomi.collector import credentials, store
from baomi.collector.app import Metrics, RateLimiter
from baomi.collector.config import ConfigError, load, render
from baomi.collector.db import MIGRATIONS, Database
from baomi.collector.validate import Event, Invalid, finding_query, health, parse_batch


def raw_event(seq: int = 1, **finding: Any) -> dict[str, Any]:
    body = {"check": "ssh.permit_root_login", "clauses": ["R-TLS"], "severity": "high",
            "subject": "PermitRootLogin", "expected": "no", "found": "yes", **finding}
    return {"id": str(uuid.uuid4()), "seq": seq, "ts": "2026-12-02T10:00:00Z",
            "kind": "finding", "finding": body}


def refused(body: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse_batch(body)
    return caught.value


def test_a_valid_batch() -> None:
    resolved = {"id": str(uuid.uuid4()).upper(), "seq": 2, "ts": "2026-12-02T11:00:00+08:00",
                "kind": "resolved", "finding": {"check": "ssh.permit_root_login",
                                                "subject": "PermitRootLogin"}}
    other = {"id": str(uuid.uuid4()), "seq": 3, "ts": "2026-12-02T11:00:00Z",
             "kind": "agent.started", "data": {"version": "1"}}
    first, second, third = parse_batch({"events": [raw_event(details={"uid": 0}, control="usb"),
                                                   resolved, other]})
    assert first.control == "ssh"  # always the check's own, whatever was sent
    assert first.clauses == " R-TLS " and first.severity == "high"
    assert json.loads(first.details or "") == {"uid": 0}
    assert second.id == resolved["id"].lower() and second.ts == first.ts - 7 * 3600
    assert second.severity == "info" and second.clauses == "" and second.found == ""
    assert third.check is None and third.data == '{"version":"1"}'


@pytest.mark.parametrize(("body", "status", "message"), [
    ([], 422, "body: expected an object with 'events'"),
    ({"events": []}, 422, "events: expected a non-empty list"),
    ({"events": [raw_event()] * 1001}, 422, "events: at most 1000 per batch, got 1001"),
    ({"events": [{**raw_event(), "id": "nope"}]}, 422, "events[0].id: expected a UUID"),
    ({"events": [{**raw_event(), "seq": True}]}, 422, "events[0].seq: expected an integer ≥ 1"),
    ({"events": [{**raw_event(), "seq": 2**63}]}, 422, "events[0].seq: expected an integer ≥ 1"),
    ({"events": [{**raw_event(), "ts": "2026-12-02 10:00"}]}, 422,
     "events[0].ts: '2026-12-02 10:00' has no time zone (add Z or +00:00)"),
    ({"events": [{**raw_event(), "kind": "Finding!"}]}, 422,
     "events[0].kind: expected 'finding', 'resolved' or a name like 'agent.started'"),
    ({"events": [raw_event(clauses=["R-XYZ"])]}, 422,
     "events[0].finding.clauses: unknown clause 'R-XYZ'"),
    ({"events": [raw_event(severity="urgent")]}, 422,
     "events[0].finding.severity: expected one of info, low, medium, high, critical"),
    ({"events": [raw_event(severity={"x": 1})]}, 422,
     "events[0].finding.severity: expected one of info, low, medium, high, critical"),
    ({"events": [raw_event(clauses=[["R-TLS"]])]}, 422,
     "events[0].finding.clauses: unknown clause ['R-TLS']"),
    ({"events": [{**raw_event(), "kind": "agent.note", "finding": {"check": "a",
                                                                  "subject": "s",
                                                                  "severity": {}}}]}, 422,
     "events[0].finding.severity: expected one of info, low, medium, high, critical"),
    ({"events": [raw_event(check="SSH root")]}, 422,
     "events[0].finding.check: expected a check ID like 'ssh.permit_root_login'"),
    ({"events": [raw_event(subject="")]}, 422, "events[0].finding.subject: must not be empty"),
    ({"events": [raw_event(found="x\x00")]}, 422,
     "events[0].finding.found: contains a NUL character"),
    ({"events": [raw_event(details={"x": "y" * 20000})]}, 422,
     "events[0].finding.details: larger than 16384 bytes as JSON"),
    ({"events": [raw_event(details={"x": float("nan")})]}, 422,
     "events[0].finding.details: numbers must be finite"),
])
def test_refusals_name_the_field(body: Any, status: int, message: str) -> None:
    problem = refused(body)
    assert (problem.status, problem.message) == (status, message)


def test_one_batch_may_not_repeat_an_id_or_a_seq() -> None:
    one = raw_event(1)
    assert refused({"events": [one, {**one, "seq": 2}]}).status == 409
    assert "seq: 1 appears twice" in refused({"events": [one, raw_event(1)]}).message


def test_finding_query() -> None:
    query = finding_query({"host": "ws1", "clause": "R-USB", "severity": "high",
                           "state": "open", "since": "2026-12-01T00:00:00Z",
                           "check": "usb.storage_module", "limit": "10", "after": "5"})
    assert (query.min_rank, query.limit, query.after) == (3, 10, 5)
    assert query.since == 1796083200.0
    for bad, message in [({"limit": "1001"}, "query limit"), ({"after": "1e3"}, "query after"),
                         ({"host": "-x"}, "query host"), ({"page": "2"}, "unknown parameter"),
                         ({"since": "3000-01-01"}, "has no time zone")]:
        with pytest.raises(Invalid, match=message):
            finding_query(bad)


def test_health_figures_are_flat() -> None:
    assert json.loads(health({"spool": 1, "ok": True, "v": "1", "x": None})) == {
        "spool": 1, "ok": True, "v": "1", "x": None}
    with pytest.raises(Invalid, match=r"body\.nested: expected a number"):
        health({"nested": {"a": 1}})
    with pytest.raises(Invalid, match="at most 64"):
        health({str(i): i for i in range(65)})
    with pytest.raises(Invalid, match="finite"):
        health({"load": float("inf")})


def test_rate_limiter_bursts_then_refills() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.wait(7, 100.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.wait(7, 100.0) == pytest.approx(0.5)
    assert limiter.wait(8, 100.0) == 0  # per agent
    assert limiter.wait(7, 100.5) == 0  # one token back after 1/rate s
    assert limiter.wait(7, 100.5) > 0


def test_metrics_histogram_is_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 20.0):
        metrics.batch(200, seconds)
    text = metrics.render({"active": 2, "revoked": 1}, db_errors=4)
    assert 'baomi_collector_batch_seconds_bucket{le="0.001"} 1' in text
    assert 'baomi_collector_batch_seconds_bucket{le="0.005"} 3' in text
    assert 'baomi_collector_batch_seconds_bucket{le="10.0"} 3' in text
    assert 'baomi_collector_batch_seconds_bucket{le="+Inf"} 4' in text
    assert 'baomi_collector_batches_total{status="200"} 4' in text
    assert 'baomi_collector_agents{state="revoked"} 1' in text
    assert "baomi_collector_db_errors_total 4" in text


def test_passwords_and_tokens() -> None:
    stored = credentials.hash_password("correct horse battery")
    assert stored.startswith("scrypt$16384$8$1$")
    assert credentials.check_password("correct horse battery", stored)
    assert not credentials.check_password("correct horse batterY", stored)
    assert not credentials.check_password("x", "md5$abc")
    assert not credentials.check_password("x", "garbage")
    token = credentials.new_token(credentials.AGENT)
    assert token.startswith("bma_") and len(token) == 47
    assert credentials.digest(token) != token and len(credentials.digest(token)) == 64


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path)
    path.write_text(render({"listen": "127.0.0.1:9", "database": "sqlite:///x.db",
                            "rate_burst": 5}))
    assert load(tmp_path).rate_burst == 5
    for text, message in [('colour = "red"\n', "unknown key 'colour'"),
                          ("rate_burst = true\n", "rate_burst has the wrong type"),
                          ('listen = "nowhere"\n', "is not ADDR:PORT"),
                          ("max_body_bytes = 10\n", "limits must be positive"),
                          ("listen = [\n", str(path))]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load(tmp_path)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Any:
    db = Database(f"sqlite:///{tmp_path}/c.db")
    assert db.migrate() == len(MIGRATIONS)
    yield db
    db.close()


def test_migrations_apply_once(sqlite_db: Database) -> None:
    assert sqlite_db.migrate() == len(MIGRATIONS)
    rows = sqlite_db.transaction(lambda tx: tx.all("SELECT version FROM schema_version"))
    assert rows == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


def test_ack_walks_over_pages_of_stored_events(sqlite_db: Database) -> None:
    sqlite_db.transaction(lambda tx: tx.run(
        "INSERT INTO agents (host, token, enrolled) VALUES ('h', 'digest', 0)"))

    def batch(seqs: range | list[int]) -> list[Event]:
        return [Event(str(uuid.uuid4()), s, 1.0 + s, "agent.tick") for s in seqs]

    now = time.time()
    for start in range(2, 12_002, 1000):  # 11,000 events above a gap at seq 1
        ack = sqlite_db.transaction(
            lambda tx, s=start: store.ingest(tx, 1, batch(range(s, s + 1000)), now))
        assert ack["acked_seq"] == 0 and ack["missing"] == 1
    filled = sqlite_db.transaction(lambda tx: store.ingest(tx, 1, batch([1]), now))
    assert filled == {"acked_seq": 12_001, "stored": 1, "duplicates": 0, "max_seq": 12_001,
                      "missing": 0}
    holes = sqlite_db.transaction(lambda tx: store.ingest(tx, 1, batch([12_003, 12_006]), now))
    assert holes["acked_seq"] == 12_001 and holes["missing"] == 3
    agent = sqlite_db.transaction(store.list_agents)[0]
    assert agent["gaps"] == [[12_002, 12_002], [12_004, 12_005]]
