"""The dashboard's pure parts: escaping, both languages complete, HR's form checks, a host's
outcome from `baomi offboard --json` output, the purge's next run, the local-only `next`;
and the offboarding tables on a real SQLite file (migrated by the collector's migrations)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from baomi.collector import auditlog
from baomi.collector.db import Database
from baomi.collector.store import Principal
from baomi.collector.validate import Invalid
from baomi.collector.web import offboard_core as offboard
from baomi.collector.web.dashboard import safe_next
from baomi.collector.web.html import Html, h, page, table, tag
from baomi.collector.web.i18n import WORDS, t
from baomi.collector.web.session import csrf_token

TODAY = date(2026, 12, 2)


def test_everything_a_host_sends_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    cell = table(["h"], [[hostile]])
    assert "<script>" not in cell and "&lt;script&gt;" in cell and "&amp;" in cell
    assert tag("a", "x", href='" onclick="evil') == \
        '<a href="&quot; onclick=&quot;evil">x</a>'
    assert h(Html("<b>kept</b>")) == "<b>kept</b>"
    whole = page("en", hostile, "body", user=hostile, role="it", csrf="c")
    assert "<script>" not in whole and whole.startswith("<!doctype html>")


def test_both_languages_for_every_word() -> None:
    for key, (zh, en) in WORDS.items():
        assert zh and en and zh != en, key
        assert t("zh", key) == zh or "{" in zh
    assert t("en", "purge_schedule", hour=3).endswith("3:00 UTC")
    assert t("xx", "login") == "登录"  # an unknown language is the default, zh-CN


@pytest.mark.parametrize(("value", "expected"), [
    ("/hosts/ws1", "/hosts/ws1"), ("//evil.example/", "/"), ("/\\evil", "/"),
    ("https://evil.example/", "/"), ("", "/"), (None, "/")])
def test_next_is_always_local(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_csrf_token_is_per_session() -> None:
    assert csrf_token("bms_a") != csrf_token("bms_b")
    assert csrf_token("bms_a") == csrf_token("bms_a") and len(csrf_token("bms_a")) == 64


def form(**values: str) -> dict[str, str]:
    return {"user": "leaver", "ticket": "HR-1", "reason": "resigned",
            "effective": "2026-12-01", **values}


def test_hr_form_accepted() -> None:
    assert offboard.check_request(form(), TODAY) == ("leaver", "HR-1", "resigned",
                                                     date(2026, 12, 1))
    assert offboard.check_request(form(effective=""), TODAY)[3] == TODAY


@pytest.mark.parametrize(("values", "message"), [
    ({"user": "../etc"}, "user: '../etc' is not a valid user name"),
    ({"user": ""}, "user: '' is not a valid user name"),
    ({"ticket": " "}, "ticket: HR's ticket is required"),
    ({"reason": ""}, "reason: required"),
    ({"effective": "1.12.2026"}, "effective: '1.12.2026' is not a date"),
    ({"effective": "2026-12-03"}, "effective: 2026-12-03 is in the future"),
    ({"effective": "2025-01-01"}, "effective: "),
])
def test_hr_form_refused_naming_the_field(values: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid) as caught:
        offboard.check_request(form(**values), TODAY)
    assert caught.value.message.startswith(message) and caught.value.status == 422


def test_host_outcome_from_the_commands_json() -> None:
    frozen = {"hosts": {"srv1": {"state": "frozen", "error": None, "done": ["a", "b"],
                                 "already": []}}}
    assert offboard.host_outcome("srv1", 0, json.dumps(frozen), "") == \
        ("frozen", "2 steps done, 0 already")
    pending = {"hosts": {"srv2": {"state": "pending", "error": "ssh: connect refused"}}}
    assert offboard.host_outcome("srv2", 1, json.dumps(pending), "") == \
        ("pending", "ssh: connect refused")
    assert offboard.host_outcome("srv1", 2, "", "baomi offboard: refused: root is protected\n"
                                 ) == ("refused", "baomi offboard: refused: root is protected")
    assert offboard.host_outcome("srv1", 1, "{not json", "") == ("failed", "exit status 1")
    odd = {"hosts": {"srv1": {"state": "<b>made up</b>"}}}
    assert offboard.host_outcome("srv1", 0, json.dumps(odd), "")[0] == "failed"


def test_every_json_document_of_a_run() -> None:
    text = '{"user": "a", "hosts": {}}\n{"now": "2026-12-02", "events": [{"x": 1}]}\n'
    assert [sorted(d) for d in offboard.json_documents(text)] == [["hosts", "user"],
                                                                  ["events", "now"]]
    assert offboard.json_documents("") == [] and offboard.json_documents("{broken") == []


def test_purge_runs_next_at_the_hour() -> None:
    now = datetime(2026, 12, 2, 2, 30, tzinfo=UTC)
    assert offboard.seconds_until(3, now) == 1800
    assert offboard.seconds_until(2, now) == 24 * 3600 - 1800
    assert offboard.seconds_until(2, now.replace(minute=0)) == 24 * 3600


def test_requests_and_interrupted_runs_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        db.migrate()
        rid = db.transaction(lambda tx: offboard.add_request(
            tx, "leaver", "HR-1", "resigned", TODAY, Principal("hr", "hr1"), ["srv1", "srv2"]))
        db.transaction(lambda tx: offboard.set_host(tx, rid, "srv1", "frozen", "done"))
        db.transaction(lambda tx: offboard.set_host(tx, rid, "srv2", "running", ""))
        db.transaction(offboard.interrupted)
        got = db.transaction(lambda tx: offboard.get_request(tx, rid))
        assert got["due"] == "2027-01-31" and got["state"] == "pending"
        assert [(x["host"], x["state"]) for x in got["hosts"]] == [("srv1", "frozen"),
                                                                  ("srv2", "pending")]
        assert "interrupted" in got["hosts"][1]["detail"]
        db.transaction(lambda tx: offboard.finish(tx, rid))
        assert db.transaction(lambda tx: offboard.get_request(tx, rid))["state"] == "pending"
        logged = db.transaction(auditlog.rows)
        assert [(x["actor"], x["role"], x["action"]) for x in logged] == \
            [("hr1", "hr", "offboarding.request")]
        assert db.transaction(auditlog.check)["ok"] is True
    finally:
        db.close()


def test_the_child_session_file_is_private_and_never_through_a_link(tmp_path: Path) -> None:
    made = {"user": "collector (for hr1)", "role": "it", "expires": "x", "token": "bms_t"}
    written = offboard.write_child_session(tmp_path / "state", "https://c:8443", "/ca.pem", made)
    assert written.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert json.loads(written.read_text())["token"] == "bms_t"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(Invalid) as caught:
        offboard.write_child_session(tmp_path / "linked", "https://c:8443", "/ca.pem", made)
    assert "not a directory" in caught.value.message and not list(elsewhere.iterdir())
