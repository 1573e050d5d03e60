"""The dashboard on a real collector (uvicorn over TLS, SQLite): login and its cookie, the role
matrix for every page and form, CSRF on every form, acknowledging from the host page, logout.

The browser test (headless Chromium, a finding arriving, HR offboarding a lab user) is
tests/integration/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import secrets
from datetime import date
from typing import Any

from baomi.collector import auditlog
from baomi.collector.db import Database
from baomi.collector.store import Principal
from baomi.collector.web import offboard_core as core
from tests.collector.conftest import Collector, StartCollector, event
from tests.collector.pgcluster import Cluster
from tests.collector.webclient import Web

IT, READERS = {"it"}, {"it", "auditor"}
EVERYONE, OFFBOARDERS = {"it", "auditor", "hr"}, {"it", "hr"}
SUBJECT = "sshd PermitRootLogin on ws-dash"


def person(c: Collector, role: str) -> Web:
    name = f"{role}{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    made = c.client(c.it).post("/api/v1/users", {"user": name, "password": password,
                                                 "role": role})
    assert made.status == 201, made.body
    web = Web(c.port, c.ca)
    answer = web.login(name, password)
    assert answer.status == 303, answer.body
    return web


def with_finding(c: Collector) -> int:
    agent = c.enrol("ws-dash")
    sent = agent.send([event(1, subject=SUBJECT)])
    assert sent.status == 200, sent.body
    found = c.client(c.it).get("/api/v1/findings?host=ws-dash").body["findings"]
    return int(found[0]["id"])


def test_login_cookie_and_logout(start_collector: StartCollector) -> None:
    c = start_collector("sqlite")
    web = Web(c.port, c.ca)
    assert web.get("/fleet").status == 303  # not logged in: to the login page
    form = web.get("/login")
    assert form.status == 200
    assert form.headers["content-security-policy"].startswith("default-src 'self'")
    assert form.headers["x-content-type-options"] == "nosniff"
    wrong = web.post("/login", {"csrf": form.csrf(), "user": "admin", "password": "nope" * 4})
    assert wrong.status == 401 and 'id="message"' in wrong.body
    assert web.post("/login", {"csrf": "forged", "user": "admin",
                               "password": c.admin_password}).status == 400
    ok = web.login("admin", c.admin_password)
    assert ok.status == 303 and ok.location == "/"
    session = next(line for line in ok.cookies if line.startswith("__Host-baomi_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in session.lower(), session
    token = web.jar["__Host-baomi_session"]
    assert c.client(token).get("/api/v1/me").body["user"] == "admin"  # the API's own session
    fleet = web.get("/fleet")
    assert fleet.status == 200 and 'id="hosts"' in fleet.body and 'id="alerts"' in fleet.body
    assert web.post("/logout", {"csrf": "wrong"}).status == 303  # refused: still logged in
    assert web.get("/fleet").status == 200
    assert web.post("/logout", {"csrf": fleet.csrf("logout")}).status == 303
    assert c.client(token).get("/api/v1/me").status == 401  # the session is over
    web.jar["__Host-baomi_session"] = token
    assert web.get("/fleet").status == 303


def test_role_matrix_for_every_page_and_form(collector: Collector) -> None:
    c = collector  # SQLite and PostgreSQL
    finding = with_finding(c)
    webs = {role: person(c, role) for role in ("it", "auditor", "hr")}
    cases: list[tuple[str, str, set[str]]] = [
        ("GET", "/fleet", READERS), ("GET", "/hosts/ws-dash", READERS),
        ("GET", "/clauses/R-TLS", READERS), ("POST", f"/findings/{finding}/ack", IT),
        ("GET", "/escrow", IT), ("POST", "/escrow", IT),
        ("GET", "/offboarding", EVERYONE), ("POST", "/offboarding", OFFBOARDERS),
        ("GET", "/offboarding/1", EVERYONE), ("GET", "/offboarding/1/progress.json", EVERYONE),
        ("GET", "/audits", READERS),
    ]
    for role, web in webs.items():
        csrf = web.get("/offboarding").csrf("logout")
        for method, target, allowed in cases:
            fields: dict[str, Any] = {"csrf": csrf, "comment": "", "reason": "",
                                      "user": "x", "ticket": "T", "entry": "e"}
            got = web.post(target, fields) if method == "POST" else web.get(target)
            where = f"{role} {method} {target}: {got.status}"
            if role in allowed:
                assert got.status not in (303, 403), where
            else:
                assert got.status == 403, where
                assert SUBJECT not in got.body and "ssh.permit_root_login" not in got.body, where
        # hr lands on offboarding and no page of theirs shows a finding or the escrow form
        home = web.get("/")
        assert home.location == ("/offboarding" if role == "hr" else "/fleet"), role
        page = web.get("/offboarding").body
        assert SUBJECT not in page
        assert ('href="/escrow"' in page) == (role == "it")
        assert ('href="/fleet"' in page) == (role != "hr")
    # the acknowledgement above was refused for auditor and hr, and empty for it: still open
    state = c.client(c.it).get(f"/api/v1/findings/{finding}").body["state"]
    assert state == "open"
    assert "offboard_inventory" in webs["hr"].post(
        "/offboarding", {"csrf": webs["hr"].get("/offboarding").csrf("logout"), "user": "u",
                         "ticket": "T", "reason": "r", "effective": ""}).body


def test_acknowledge_from_the_host_page_needs_the_csrf_token(
        start_collector: StartCollector) -> None:
    c = start_collector("sqlite", alert_min_severity="high")
    finding = with_finding(c)
    it = person(c, "it")
    alerted = it.get("/fleet").body
    assert alerted.count('href="/hosts/ws-dash"') == 2  # in the open alerts and the hosts
    host = it.get("/hosts/ws-dash")
    assert host.status == 200 and SUBJECT in host.body and f'id="ack-{finding}"' in host.body
    for bad in ({"comment": "ok"}, {"comment": "ok", "csrf": "0" * 64}):
        assert it.post(f"/findings/{finding}/ack", bad).status == 400
    other = person(c, "it")  # another person's token is not this session's
    assert it.post(f"/findings/{finding}/ack", {
        "comment": "ok", "csrf": other.get("/fleet").csrf("logout")}).status == 400
    cross = it.post(f"/findings/{finding}/ack", {"comment": "ok", "csrf": host.csrf()},
                    headers={"Origin": "https://evil.example"})
    assert cross.status == 400
    assert c.client(c.it).get(f"/api/v1/findings/{finding}").body["state"] == "open"
    done = it.post(f"/findings/{finding}/ack", {"comment": "known; fix in change 42",
                                                "csrf": host.csrf(f"ack-{finding}")})
    assert done.status == 303 and done.location == "/hosts/ws-dash"
    record = c.client(c.it).get(f"/api/v1/findings/{finding}").body
    assert record["state"] == "acknowledged" and record["ack"]["comment"] == \
        "known; fix in change 42"
    assert it.get("/fleet").body.count('href="/hosts/ws-dash"') == 1  # the alert answered
    again = it.get("/hosts/ws-dash").body
    assert "known; fix in change 42" in again and f'id="ack-{finding}"' not in again
    assert it.get("/hosts/no-such-host").status == 404
    assert it.get("/clauses/R-NOPE").status == 404
    english = it.get("/lang/en?next=/clauses/R-TLS")
    assert english.location == "/clauses/R-TLS"
    clause = it.get("/clauses/R-TLS").body
    assert "加密传输" in clause and "Customer data is transmitted encrypted." in clause
    assert "Log out" in clause and 'lang="en"' in clause


def test_escrow_retrieval_needs_a_reason_and_is_logged(start_collector: StartCollector) -> None:
    c = start_collector("sqlite")
    entry = {"id": "e1", "kind": "luks", "host": "ws-dash", "subject": "UUID=1234",
             "created": "2026-12-02T10:00:00+00:00", "recipient": "BAOMI-ESCROW-RECIPIENT-1 x",
             "sealed": "c2VhbGVkLWJveC1ieXRlcw=="}
    put = c.client(c.it).post("/api/v1/records/escrow", {"records": [{"uid": "e1",
                                                                      "record": entry}]})
    assert put.status == 200, put.body
    it = person(c, "it")
    page = it.get("/escrow")
    assert page.status == 200 and "UUID=1234" in page.body
    assert "c2VhbGVkLWJveC1ieXRlcw==" not in page.body  # the listing never carries it
    fields = {"csrf": page.csrf("escrow"), "kind": "luks", "host": "ws-dash",
              "subject": "UUID=1234"}
    assert it.post("/escrow", {**fields, "reason": "  "}).status == 422
    log = c.client(c.it).get("/api/v1/log").body["lines"]
    assert not [x for x in log if x["action"] == "escrow.retrieve"]
    got = it.post("/escrow", {**fields, "reason": "ws-dash lost its TPM; ticket IT-9"})
    assert got.status == 200 and 'id="sealed"' in got.body
    assert "c2VhbGVkLWJveC1ieXRlcw==" in got.body
    log = c.client(c.it).get("/api/v1/log").body["lines"]
    retrieved = [x for x in log if x["action"] == "escrow.retrieve"]
    assert len(retrieved) == 1 and retrieved[0]["role"] == "it"
    assert "ws-dash lost its TPM" in json.dumps(retrieved[0])
    assert "ws-dash lost its TPM" in it.get("/escrow").body  # listed among retrievals
    assert c.client(c.it).get("/api/v1/log/verify").body["ok"] is True


def test_the_login_form_is_throttled_like_the_api(start_collector: StartCollector) -> None:
    c = start_collector("sqlite", login_max_failures_per_user=3)
    web = Web(c.port, c.ca)
    statuses = [web.login("admin", f"wrong-password-{n}").status for n in range(4)]
    assert statuses[:3] == [401, 401, 401] and statuses[3] == 429, statuses
    locked = web.login("admin", c.admin_password)  # the right password: still locked out
    assert locked.status == 429 and "too many failed logins" in locked.body
    api = c.client().post("/api/v1/login", {"user": "admin", "password": c.admin_password})
    assert api.status == 429  # one counter for both doors


def test_offboarding_tables_on_postgresql(pg_cluster: Cluster) -> None:
    """The SQL of HR's requests and the purge's claim on a real PostgreSQL (SQLite: unit)."""
    db = Database(pg_cluster.new_database())
    try:
        db.migrate()
        hr = Principal("hr", "hr1")
        rid = db.transaction(lambda tx: core.add_request(
            tx, "leaver", "HR-1", "resigned", date(2026, 12, 1), hr, ["srv1", "srv2"]))
        db.transaction(lambda tx: core.set_host(tx, rid, "srv1", "frozen", "done"))
        db.transaction(lambda tx: core.set_host(tx, rid, "srv2", "running", ""))
        db.transaction(core.interrupted)
        got = db.transaction(lambda tx: core.get_request(tx, rid))
        assert [(x["host"], x["state"]) for x in got["hosts"]] == [("srv1", "frozen"),
                                                                  ("srv2", "pending")]
        assert got["due"] == "2027-01-31" and got["state"] == "pending"
        assert db.transaction(lambda tx: core.claim_day(tx, "2026-12-02")) is True
        assert db.transaction(lambda tx: core.claim_day(tx, "2026-12-02")) is False
        db.transaction(lambda tx: core.purge_done(tx, "2026-12-02", "ok", "waiting: 1"))
        requests, purges = db.transaction(core.listing)
        assert [r["id"] for r in requests] == [rid]
        assert [tuple(p) for p in purges] == [("2026-12-02", "ok", "waiting: 1")]
        assert [x["action"] for x in db.transaction(auditlog.rows)] == ["offboarding.request"]
    finally:
        db.close()
