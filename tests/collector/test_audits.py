"""Audit history at a real collector (uvicorn over TLS), on SQLite and on PostgreSQL: what
``baomi audit --upload`` posts, the runs over time with their score per clause, the changes
since the previous run, roles, refusals and the once-per-row rule."""

from __future__ import annotations

from typing import Any

from baomi.results import Audit, CheckResult
from tests.collector.conftest import Collector


def document(**statuses: str) -> dict[str, Any]:
    """An audit of host srv1 and ws1; ``statuses`` maps 'host__check' to its status."""
    rows = [CheckResult(key.split("__")[0], key.split("__")[1].replace("_", ".", 1),
                        ("R-USB",) if "usb" in key else ("R-TLS",), "t", status,
                        evidence=({"subject": "sshd Ciphers", "expected": "e", "found": "f"},),
                        timestamp="2026-12-02T10:00:00+00:00")
            for key, status in statuses.items()]
    return Audit(rows, organisation="甲公司", started="2026-12-02T10:00:00+00:00",
                 finished="2026-12-02T10:00:05+00:00", policy={"sha256": "ab" * 32},
                 scope={"hosts": ["srv1", "ws1"]}).as_dict()


def test_upload_list_and_changes(collector: Collector) -> None:
    it = collector.client(collector.it)
    first = it.post("/api/v1/audits", document(srv1__ssh_ciphers="fail", ws1__usb_rules="waived"))
    assert first.status == 201, first.body
    assert first.body["results"] == 2
    # A second part of the same run (a large fleet's results come in parts).
    more = it.post(f"/api/v1/audits/{first.body['id']}/results",
                   {"results": document(ws1__ssh_ciphers="pass")["results"]})
    assert more.status == 200 and more.body["results"] == 1, more.body
    again = it.post(f"/api/v1/audits/{first.body['id']}/results",
                    {"results": document(ws1__ssh_ciphers="pass")["results"]})
    assert again.status == 409, again.body  # a row is stored once
    auditor = collector.client(collector.user("auditor"))
    second = auditor.post("/api/v1/audits", document(
        srv1__ssh_ciphers="pass", ws1__usb_rules="waived", ws1__ssh_ciphers="pass"))
    assert second.status == 201, second.body

    runs = it.get("/api/v1/audits").body["audits"]
    assert [r["id"] for r in runs] == [second.body["id"], first.body["id"]]
    assert runs[1]["clauses"] == {"R-TLS": 50, "R-USB": 100}
    assert runs[0]["clauses"] == {"R-TLS": 100, "R-USB": 100} and runs[0]["score"] == 100
    assert (runs[1]["exit_status"], runs[0]["exit_status"]) == (1, 0)

    latest = it.get(f"/api/v1/audits/{second.body['id']}").body
    assert latest["previous"] == first.body["id"]
    assert latest["changes"] == [{"host": "srv1", "check": "ssh.ciphers", "clauses": "R-TLS",
                                  "before": "fail", "after": "pass"}]
    assert latest["organisation"] == "甲公司" and latest["policy"]["sha256"] == "ab" * 32
    assert latest["scores"]["hosts"]["srv1"]["score"] == 100


def test_roles_and_refusals(collector: Collector) -> None:
    hr = collector.client(collector.user("hr"))
    assert hr.get("/api/v1/audits").status == 403
    assert hr.post("/api/v1/audits", document(srv1__ssh_ciphers="pass")).status == 403
    assert collector.client().get("/api/v1/audits").status == 401
    it = collector.client(collector.it)
    bad = document(srv1__ssh_ciphers="pass")
    bad["results"][0]["status"] = "great"
    answer = it.post("/api/v1/audits", bad)
    assert answer.status == 422 and "'great'" in answer.body["error"], answer.body
    answer = it.post("/api/v1/audits", {"format": "other"})
    assert answer.status == 422 and "not a baomi audit" in answer.body["error"]
    hostile = document(srv1__ssh_ciphers="pass")
    hostile["results"][0]["host"] = "../../etc"
    assert it.post("/api/v1/audits", hostile).status == 422
    assert it.get("/api/v1/audits/99999").status == 404
    assert it.get("/api/v1/audits/x1").status == 422
    assert it.post("/api/v1/audits/99999/results", {"results": []}).status == 404


def test_dashboard_page(collector: Collector) -> None:
    from tests.collector.webclient import Web

    web = Web(collector.port, collector.ca)
    assert web.login("admin", collector.admin_password).status == 303
    empty = web.get("/audits")
    assert empty.status == 200 and "baomi audit --upload" in empty.body
    it = collector.client(collector.it)
    assert it.post("/api/v1/audits", document(srv1__ssh_ciphers="fail",
                                              ws1__usb_rules="waived")).status == 201
    assert it.post("/api/v1/audits", document(srv1__ssh_ciphers="pass",
                                              ws1__usb_rules="waived")).status == 201
    shown = web.get("/audits")
    assert shown.status == 200
    trend = shown.body.split('id="audit-trend"', 1)[1].split("</table>", 1)[0]
    assert trend.count("<tr>") == 3 and "50%" in trend and "100%" in trend
    changes = shown.body.split('id="audit-changes"', 1)[1].split("</table>", 1)[0]
    assert "srv1" in changes and "ssh.ciphers" in changes and "fail" in changes
    web.get("/lang/en?next=/audits")
    assert "Compliance per clause over time" in web.get("/audits").body
    hr = Web(collector.port, collector.ca)
    name = "hr" + collector.it[:6].lower().replace("-", "x").replace("_", "x")
    made = it.post("/api/v1/users", {"user": name, "password": "a-long-password-1",
                                     "role": "hr"})
    assert made.status == 201, made.body
    assert hr.login(name, "a-long-password-1").status == 303
    assert hr.get("/audits").status == 403
