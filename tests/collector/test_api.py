"""The collector's API against a real server process over TLS, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.collector.conftest import Collector, StartCollector, event, init_folder

API = "/api/v1"


def test_same_batch_twice_is_stored_once(collector: Collector) -> None:
    agent = collector.enrol("ws-dup")
    batch = [event(1), event(2, subject="other"), event(3, kind="agent.started")]
    batch[2].pop("finding")
    first = agent.send(batch)
    assert first.status == 200, first.body
    assert first.body == {"acked_seq": 3, "stored": 3, "duplicates": 0, "max_seq": 3,
                          "missing": 0}
    again = agent.send(batch)
    assert again.status == 200
    assert again.body == {"acked_seq": 3, "stored": 0, "duplicates": 3, "max_seq": 3,
                          "missing": 0}
    (listed,) = [a for a in collector.client(collector.it).get(f"{API}/agents").body["agents"]
                 if a["id"] == agent.id]
    assert listed["events"] == 3
    found = collector.client(collector.it).get(f"{API}/findings?host=ws-dup").body["findings"]
    assert len(found) == 2


def test_gap_is_visible_and_ack_stops_below_it_until_filled(collector: Collector) -> None:
    agent = collector.enrol("ws-gap")
    assert agent.send([event(1), event(2)]).body["acked_seq"] == 2
    later = agent.send([event(5, subject="s5"), event(6, subject="s6")])
    assert later.body == {"acked_seq": 2, "stored": 2, "duplicates": 0, "max_seq": 6,
                          "missing": 2}
    it = collector.client(collector.it)
    (listed,) = [a for a in it.get(f"{API}/agents").body["agents"] if a["id"] == agent.id]
    assert listed["gaps"] == [[3, 4]] and listed["missing"] == 2
    (host,) = [h for h in it.get(f"{API}/hosts").body["hosts"] if h["host"] == "ws-gap"]
    assert host["missing"] == 2 and host["acked_seq"] == 2
    # Out of order: 4 arrives before 3; the ack moves only when 3 fills the gap.
    assert agent.send([event(4, subject="s4")]).body["acked_seq"] == 2
    filled = agent.send([event(3, subject="s3")])
    assert filled.body == {"acked_seq": 6, "stored": 1, "duplicates": 0, "max_seq": 6,
                           "missing": 0}
    (listed,) = [a for a in it.get(f"{API}/agents").body["agents"] if a["id"] == agent.id]
    assert listed["gaps"] == [] and listed["acked_seq"] == 6


def test_broken_numbering_is_refused_whole(collector: Collector) -> None:
    agent = collector.enrol("ws-conflict")
    first = event(1)
    assert agent.send([first]).status == 200
    reused_seq = agent.send([event(2), event(1)])  # seq 1 again, another id
    assert reused_seq.status == 409 and "seq 1" in reused_seq.body["error"]
    reused_id = agent.send([event(2, event_id=first["id"])])
    assert reused_id.status == 409
    twice = agent.send([event(2), event(2)])
    assert twice.status == 409 and "twice" in twice.body["error"]
    # Nothing of the refused batches was stored: seq 2 is still free.
    ok = agent.send([event(2)])
    assert ok.body["acked_seq"] == 2 and ok.body["stored"] == 1


def test_agent_writes_only_as_its_own_host(collector: Collector) -> None:
    agent = collector.enrol("ws-own")
    forged = event(1)
    forged["host"] = "victim"
    assert agent.send([forged]).status == 200
    it = collector.client(collector.it)
    assert it.get(f"{API}/findings?host=victim").body["findings"] == []
    (mine,) = it.get(f"{API}/findings?host=ws-own").body["findings"]
    assert mine["host"] == "ws-own"


def test_one_record_per_host_check_subject_with_history(collector: Collector) -> None:
    agent = collector.enrol("ws-life")
    it = collector.client(collector.it)
    agent.send([event(1, ts="2026-12-02T10:00:00Z", found="yes"),
                event(2, ts="2026-12-02T10:05:00Z", found="without-password")])
    (record,) = it.get(f"{API}/findings?host=ws-life").body["findings"]
    assert record["state"] == "open" and record["found"] == "without-password"
    assert record["check"] == "ssh.permit_root_login" and record["control"] == "ssh"
    assert record["clauses"] == ["R-TLS"] and record["details"] == {"source": "test"}
    # Acknowledge, then the same finding again: still acknowledged, still one record.
    acked = it.post(f"{API}/findings/{record['id']}/ack", {"comment": "ticket 42"})
    assert acked.status == 200 and acked.body["state"] == "acknowledged"
    assert acked.body["ack"]["by"] == "admin" and acked.body["ack"]["comment"] == "ticket 42"
    agent.send([event(3, ts="2026-12-02T10:10:00Z")])
    (record,) = it.get(f"{API}/findings?host=ws-life").body["findings"]
    assert record["state"] == "acknowledged"
    # Resolved; an OLDER finding event arriving late does not reopen it.
    agent.send([event(5, kind="resolved", ts="2026-12-02T11:00:00Z")])
    agent.send([event(4, ts="2026-12-02T10:30:00Z")])
    (record,) = it.get(f"{API}/findings?host=ws-life").body["findings"]
    assert record["state"] == "resolved" and record["resolved_at"].startswith("2026-12-02T11")
    assert it.post(f"{API}/findings/{record['id']}/ack", {"comment": "x"}).status == 409
    # A newer finding reopens it and clears the acknowledgement.
    agent.send([event(6, ts="2026-12-02T12:00:00Z")])
    detail = it.get(f"{API}/findings/{record['id']}").body
    assert detail["state"] == "open" and detail["ack"] is None
    # The history is every event in the order things happened on the host (the late seq 4
    # included), the acknowledgement at the time it was given (now, after the events' times).
    kinds = [h["kind"] for h in detail["history"]]
    assert kinds == ["finding"] * 4 + ["resolved", "finding", "ack"]
    assert detail["history"][-1]["comment"] == "ticket 42"


def test_findings_filters(collector: Collector) -> None:
    agent = collector.enrol("ws-filter")
    agent.send([
        event(1, check="usb.storage_module", subject="usb-storage", severity="critical",
              clauses=("R-USB", "R-DEV"), ts="2026-12-01T00:00:00Z"),
        event(2, check="passwords.min_length", subject="minlen", severity="medium",
              clauses=("R-PWD",), ts="2026-12-02T00:00:00Z"),
        event(3, check="passwords.max_days", subject="max_days", severity="low",
              clauses=("R-PWD",), ts="2026-12-03T00:00:00Z"),
        event(4, kind="resolved", check="passwords.max_days", subject="max_days",
              ts="2026-12-03T01:00:00Z")])
    it = collector.client(collector.it)

    def subjects(query: str) -> list[str]:
        answer = it.get(f"{API}/findings?host=ws-filter&{query}")
        assert answer.status == 200, answer.body
        return sorted(f["subject"] for f in answer.body["findings"])

    assert subjects("clause=R-DEV") == ["usb-storage"]
    assert subjects("clause=R-PWD") == ["max_days", "minlen"]
    assert subjects("severity=medium") == ["minlen", "usb-storage"]
    assert subjects("state=resolved") == ["max_days"]
    assert subjects("state=open") == ["minlen", "usb-storage"]
    assert subjects("since=2026-12-02T00:00:00Z") == ["max_days", "minlen"]
    assert subjects("check=usb.storage_module") == ["usb-storage"]
    page = it.get(f"{API}/findings?host=ws-filter&limit=2").body
    rest = it.get(f"{API}/findings?host=ws-filter&limit=2&after={page['next']}").body
    assert len(page["findings"]) == 2 and len(rest["findings"]) == 1 and rest["next"] is None
    for bad in ("severity=urgent", "clause=R-NOPE", "state=closed", "since=yesterday",
                "limit=0", "after=-1", "colour=red"):
        answer = it.get(f"{API}/findings?{bad}")
        assert answer.status == 422, (bad, answer.status)
        assert answer.body["error"].startswith("query"), answer.body


def test_summary_by_clause_and_host(collector: Collector) -> None:
    bad, good = collector.enrol("ws-bad"), collector.enrol("ws-good")
    bad.send([event(1, check="usb.storage_module", subject="usb", clauses=("R-USB",))])
    good.send([event(1, check="usb.storage_module", subject="usb", clauses=("R-USB",)),
               event(2, kind="resolved", check="usb.storage_module", subject="usb",
                     ts="2026-12-02T11:00:00Z")])
    summary = collector.client(collector.it).get(f"{API}/summary").body
    assert summary["hosts"] == 2
    (usb,) = [c for c in summary["by_clause"] if c["clause"] == "R-USB"]
    assert usb["hosts_failing"] == 1 and usb["hosts_compliant"] == 1 and usb["open"] == 1
    by_host = {h["host"]: h for h in summary["by_host"]}
    assert by_host["ws-bad"]["failing_clauses"] == ["R-USB"]
    assert by_host["ws-good"]["compliant"] is True


def test_enrolment_tokens_one_time_expiring_revoked_bound(collector: Collector) -> None:
    it = collector.client(collector.it)
    anyone = collector.client()
    one = it.post(f"{API}/enrolment-tokens", {}).body["token"]
    assert anyone.post(f"{API}/enroll", {"token": one, "host": "h1"}).status == 201
    spent = anyone.post(f"{API}/enroll", {"token": one, "host": "h2"})
    assert spent.status == 401 and "already used" in spent.body["error"]
    bound = it.post(f"{API}/enrolment-tokens", {"host": "h3"}).body["token"]
    assert anyone.post(f"{API}/enroll", {"token": bound, "host": "h4"}).status == 403
    made = it.post(f"{API}/enrolment-tokens", {"one_time": False, "expires_in": 60}).body
    for host in ("h5", "h6"):  # reusable until it expires
        assert anyone.post(f"{API}/enroll", {"token": made["token"], "host": host}).status == 201
    assert it.request("DELETE", f"{API}/enrolment-tokens/{made['id']}").status == 204
    revoked = anyone.post(f"{API}/enroll", {"token": made["token"], "host": "h7"})
    assert revoked.status == 401 and "revoked" in revoked.body["error"]
    assert it.post(f"{API}/enrolment-tokens", {"one_time": False, "expires_in": 5}).status \
        == 422  # below the 60 s minimum
    listed = it.get(f"{API}/enrolment-tokens").body["tokens"]
    assert all("token" not in t for t in listed) and len(listed) == 3
    assert anyone.post(f"{API}/enroll", {"token": "bme_nope", "host": "h8"}).status == 401


def test_expired_enrolment_token(start_collector: StartCollector, backend: str) -> None:
    collector = start_collector(backend)
    it = collector.client(collector.it)
    token = it.post(f"{API}/enrolment-tokens", {"one_time": False, "expires_in": 60}).body
    # Age it in the database (a 60 s wait is not a test); the server reads the row each time.
    if backend == "sqlite":
        with sqlite3.connect(collector.folder / "collector.db") as db:
            db.execute("UPDATE enrol_tokens SET expires = 1 WHERE id = ?", (token["id"],))
    else:
        import psycopg

        assert collector.database
        with psycopg.connect(collector.database, autocommit=True) as db:
            db.execute("UPDATE enrol_tokens SET expires = 1 WHERE id = %s", (token["id"],))
    expired = collector.client().post(f"{API}/enroll", {"token": token["token"], "host": "h"})
    assert expired.status == 401 and "expired" in expired.body["error"]


def test_revoked_agent_and_reenrolled_host(collector: Collector) -> None:
    agent = collector.enrol("ws-rev")
    it = collector.client(collector.it)
    revoked = it.post(f"{API}/agents/{agent.id}/revoke")
    assert revoked.status == 200 and revoked.body["state"] == "revoked"
    assert agent.send([event(1)]).status == 401
    assert agent.client.post(f"{API}/heartbeat", {}).status == 401
    again = collector.enrol("ws-rev")  # a reinstalled host numbers from 1 again
    assert again.send([event(1)]).body["acked_seq"] == 1
    older = collector.enrol("ws-rev")  # enrolling again revokes the previous credential
    assert again.send([event(2)]).status == 401
    assert older.send([event(1)]).status == 200


def test_heartbeat_records_health_and_returns_work(collector: Collector) -> None:
    agent = collector.enrol("ws-beat")
    answer = agent.client.post(f"{API}/heartbeat", {"spool_events": 3, "version": "0.1",
                                                    "ok": True, "load": 0.5, "note": None})
    assert answer.status == 200 and answer.body == {"work": [], "acked_seq": 0}
    (listed,) = [a for a in collector.client(collector.it).get(f"{API}/agents").body["agents"]
                 if a["id"] == agent.id]
    assert listed["health"]["spool_events"] == 3 and listed["heartbeat"]
    assert agent.client.post(f"{API}/heartbeat", {"x": {"nested": 1}}).status == 422


def test_malformed_input_is_a_4xx_with_a_message(collector: Collector) -> None:
    agent = collector.enrol("ws-bad-input")
    post = agent.client.post
    cases = [
        (b"{not json", 400), (b"[]", 422), (b'{"events": []}', 422),
        (b'{"events": [{"id": "x", "seq": 1, "ts": "2026-12-02T10:00:00Z", "kind": "a"}]}', 422),
        (b'{"events": [{"id": "5b0e3c6e-1111-4b1a-9c1d-1234567890ab", "seq": 0, '
         b'"ts": "2026-12-02T10:00:00Z", "kind": "a"}]}', 422),
        (b'{"events": [{"id": "5b0e3c6e-1111-4b1a-9c1d-1234567890ab", "seq": 1, '
         b'"ts": "2026-12-02T10:00:00", "kind": "a"}]}', 422),
        (b'{"events": [{"id": "5b0e3c6e-1111-4b1a-9c1d-1234567890ab", "seq": 1e400, '
         b'"ts": "2026-12-02T10:00:00Z", "kind": "a"}]}', 422),
        (b"[" * 100_000 + b"]" * 100_000, 400),
    ]
    for raw, status in cases:
        answer = post(f"{API}/events", raw=raw)
        assert answer.status == status, (raw[:80], answer.status, answer.body)
        assert answer.body["error"], raw[:80]
    wrong_clause = event(1, clauses=("R-NOPE",))
    answer = agent.send([wrong_clause])
    assert answer.status == 422 and answer.body["error"] == \
        "events[0].finding.clauses: unknown clause 'R-NOPE'"
    wrong_control = event(1)
    wrong_control["finding"]["control"] = "usb"
    assert agent.send([wrong_control]).status == 200
    (stored,) = collector.client(collector.it).get(
        f"{API}/findings?host=ws-bad-input").body["findings"]
    assert stored["control"] == "ssh"  # taken from the check, not from the agent
    it = collector.client(collector.it)
    assert it.get(f"{API}/findings/99999999999999999999").status == 404
    assert it.get(f"{API}/findings/abc").status == 404
    assert it.get(f"{API}/nothing-here").status == 404
    assert it.request("PUT", f"{API}/hosts").status == 405


def test_size_cap_and_rate_limit(start_collector: StartCollector, backend: str) -> None:
    collector = start_collector(backend, max_body_bytes=20_000, rate_per_second=1,
                                rate_burst=3)
    agent = collector.enrol("ws-limits")
    big = agent.send([event(i + 1, subject="x" * 1000) for i in range(30)])
    assert big.status == 413 and "larger than 20000" in big.body["error"]
    same = [event(1)]
    statuses = [agent.send(same).status for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    limited = agent.send(same)
    assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
    time.sleep(1.1)
    assert agent.send(same).status == 200


def test_sessions_expire(start_collector: StartCollector, backend: str) -> None:
    collector = start_collector(backend, session_hours=0.0005)  # 1.8 s
    it = collector.client(collector.it)
    assert it.get(f"{API}/me").status == 200
    time.sleep(2.2)
    expired = it.get(f"{API}/me")
    assert expired.status == 401 and "expired" in expired.body["error"]


def test_people_and_logout(collector: Collector) -> None:
    it = collector.client(collector.it)
    made = it.post(f"{API}/users", {"user": "carol", "password": "correct horse battery",
                                    "role": "auditor"})
    assert made.status == 201 and made.body["role"] == "auditor"
    assert it.post(f"{API}/users", {"user": "carol", "password": "correct horse battery",
                                    "role": "hr"}).status == 409
    assert it.post(f"{API}/users", {"user": "dan", "password": "short",
                                    "role": "hr"}).status == 422
    assert collector.client().post(f"{API}/login", {"user": "carol",
                                                    "password": "wrong one!!!!"}).status == 401
    assert collector.client().post(f"{API}/login", {"user": "nobody",
                                                    "password": "wrong one!!!!"}).status == 401
    carol = collector.client(collector.login("carol", "correct horse battery"))
    assert carol.get(f"{API}/me").body["role"] == "auditor"
    assert carol.post(f"{API}/logout").status == 204
    assert carol.get(f"{API}/me").status == 401
    again = collector.client(collector.login("carol", "correct horse battery"))
    assert it.request("DELETE", f"{API}/users/carol").status == 204
    assert again.get(f"{API}/me").status == 401  # deleting a user ends their sessions
    assert it.request("DELETE", f"{API}/users/admin").status == 409  # oneself
    other_it = collector.client(collector.user("it"))
    me = other_it.get(f"{API}/me").body["user"]
    assert other_it.request("DELETE", f"{API}/users/admin").status == 204
    assert it.get(f"{API}/me").status == 401
    last = other_it.request("DELETE", f"{API}/users/{me}")
    assert last.status == 409 and "own account" in last.body["error"]
    assert other_it.request("DELETE", f"{API}/users/carol").status == 404


def test_metrics(collector: Collector) -> None:
    agent = collector.enrol("ws-metrics")
    batch = [event(1), event(2)]
    agent.send(batch)
    agent.send(batch)
    text = collector.client(collector.it).get("/metrics").body
    assert 'baomi_collector_events_total{result="stored"} 2' in text
    assert 'baomi_collector_events_total{result="duplicate"} 2' in text
    assert 'baomi_collector_batch_seconds_count 2' in text
    assert 'baomi_collector_agents{state="active"} 1' in text
    assert "baomi_collector_db_errors_total 0" in text
    token = (collector.folder / "metrics.token").read_text().strip()
    assert collector.client(token).get("/metrics").status == 200
    assert collector.client(token).get(f"{API}/hosts").status == 403


def test_backup_is_a_consistent_copy(collector: Collector, backend: str,
                                     tmp_path: Path) -> None:
    agent = collector.enrol("ws-backup")
    agent.send([event(i + 1, subject=f"s{i}") for i in range(50)])
    out = tmp_path / "copy.db"
    command = [sys.executable, "-m", "baomi.collector", "backup", str(collector.folder),
               str(out)]
    if collector.database:
        command += ["--db", collector.database]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if backend == "sqlite":
        with sqlite3.connect(out) as copy:
            assert copy.execute("SELECT COUNT(*) FROM events").fetchone() == (50,)
            assert copy.execute("SELECT COUNT(*) FROM findings").fetchone() == (50,)
    else:
        listing = subprocess.run(["pg_restore", "--list", str(out)], capture_output=True,
                                 text=True, check=True).stdout
        assert "TABLE DATA public events" in listing
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_init_makes_private_files_and_refuses_a_used_folder(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    password = init_folder(folder)
    assert len(password) >= 20
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert password not in (folder / "collector.toml").read_text()
    again = subprocess.run([sys.executable, "-m", "baomi.collector", "init", str(folder)],
                           capture_output=True, text=True)
    assert again.returncode == 1
    assert "exists and is not an empty folder" in again.stderr
    assert "Traceback" not in again.stderr
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    named = tmp_path / "named"
    subprocess.run([sys.executable, "-m", "baomi.collector", "init", str(named), "--name",
                    "collector.lab", "--address", "10.213.0.5", "--address", "::1"],
                   capture_output=True, check=True)
    cert = x509.load_pem_x509_certificate((named / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["collector.lab", "localhost"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [
        "10.213.0.5", "::1", "127.0.0.1"]
    bad = subprocess.run([sys.executable, "-m", "baomi.collector", "init",
                          str(tmp_path / "d"), "--address", "not-an-ip"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "--address 'not-an-ip'" in bad.stderr
    assert not (tmp_path / "d").exists()


def test_serve_reports_a_bad_database_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    init_folder(folder)
    done = subprocess.run([sys.executable, "-m", "baomi.collector", "serve", str(folder),
                           "--db", "postgresql://nobody@127.0.0.1:1/none",
                           "--listen", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PGCONNECT_TIMEOUT": "2"})
    assert done.returncode == 1
    assert "database postgresql://nobody@127.0.0.1:1/none" in done.stderr
    assert "Traceback" not in done.stderr
    bad_url = subprocess.run([sys.executable, "-m", "baomi.collector", "serve", str(folder),
                              "--db", "mysql://x"], capture_output=True, text=True)
    assert bad_url.returncode == 1 and "expected sqlite:///PATH" in bad_url.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_tls_only_with_the_pinned_ca(collector: Collector) -> None:
    import ssl

    from baomi.collector.client import Client

    other = Client("127.0.0.1", collector.port, ssl.get_default_verify_paths().cafile
                   or "/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        other.get(f"{API}/health")
    other.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_lost_database_connections_are_503_then_recovered(collector: Collector) -> None:
    import psycopg

    agent = collector.enrol("ws-db-loss")
    assert agent.send([event(1)]).status == 200
    assert collector.database
    with psycopg.connect(collector.database, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert killed and killed[0] >= 1
    # The first use of each pool connection finds it dead: 503, and the connection is
    # dropped; the agent retries the same seq until a live connection stores it.
    statuses = []
    for _ in range(30):
        answer = agent.send([event(2)])
        statuses.append(answer.status)
        assert answer.status in (200, 503), answer.body
        if answer.status == 503:
            assert answer.headers["retry-after"] == "5"
            assert answer.body["error"] == "database unavailable; retry later"
        else:
            break
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert answer.body["acked_seq"] == 2
    text = collector.client(collector.it).get("/metrics").body
    found = re.search(r"^baomi_collector_db_errors_total (\d+)$", text, re.M)
    assert found and int(found.group(1)) >= statuses.count(503)
