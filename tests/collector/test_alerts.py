"""Alerts (R-INC) and login throttling against real collector processes, SQLite and PostgreSQL.

The webhook receiver is a real HTTP server on loopback (stopped and started again on the
same port), the syslog socket a unix datagram socket this test binds; the collector is killed
with SIGKILL between "receiver down" and "receiver up" to prove the outbox is durable.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baomi.lab.webhook import Receiver
from tests.collector.conftest import Agent, Collector, StartCollector, event, free_port, serve

API = "/api/v1"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port())
    try:
        yield made
    finally:
        made.down()


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound unix datagram socket standing in for /dev/log: (its path, the socket)."""
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    try:
        yield path, sock
    finally:
        sock.close()


def lines(sock: socket.socket, count: int, seconds: float = 20) -> list[str]:
    """``count`` syslog datagrams (fails after ``seconds``)."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    assert len(got) == count, got
    return got


def wait_for(what: str, probe: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def alerts_of(collector: Collector, query: str = "") -> list[dict[str, Any]]:
    answer = collector.client(collector.it).get(f"{API}/alerts{query}")
    assert answer.status == 200, answer.body
    found: list[dict[str, Any]] = answer.body["alerts"]
    return found


def test_receiver_down_then_up_gets_exactly_the_alerts_across_a_kill(
        backend: str, start_collector: StartCollector, receiver: Receiver,
        syslog: tuple[str, socket.socket]) -> None:
    path, sock = syslog
    first = start_collector(backend, alert_webhook=f"http://127.0.0.1:{receiver.port}/hook",
                            alert_syslog_socket=path, alert_min_severity="high",
                            alert_retry_max_seconds=1)
    agent = first.enrol("al-web1")
    sent = agent.send([
        event(1, check="ssh.permit_root_login", severity="critical"),
        event(2, check="firewall.default_policy", subject="input", severity="high"),
        event(3, check="passwords.max_days", subject="PASS_MAX_DAYS", severity="medium"),
        event(4, check="usb.storage", subject="usb-storage", severity="low")])
    assert sent.status == 200, sent.body
    # syslog at once, one line per alert, naming the clause; below the threshold: nothing
    syslog_lines = lines(sock, 2)
    assert all("R-INC alert" in line and "al-web1" in line for line in syslog_lines)
    assert {c for c in ("ssh.permit_root_login", "firewall.default_policy")
            if any(c in line for line in syslog_lines)} == {"ssh.permit_root_login",
                                                             "firewall.default_policy"}
    assert all(line.startswith(("<34>", "<35>")) for line in syslog_lines), syslog_lines
    # the receiver is down: retried (attempts grow, the error is kept), nothing delivered
    pending = wait_for("two failed attempts each", lambda: [
        a for a in alerts_of(first) if a["webhook"]["attempts"] >= 2] == alerts_of(first)
        and alerts_of(first))
    assert len(pending) == 2
    assert all(a["webhook"]["state"] == "pending" and a["state"] == "open" for a in pending)
    assert all("Connection" in a["webhook"]["last_error"] for a in pending), pending
    # one more alert, then the collector is killed (no graceful shutdown)
    assert agent.send([event(5, check="usb.storage", subject="card", severity="critical")]
                      ).status == 200
    lines(sock, 1)
    expected = {a["id"] for a in alerts_of(first)}
    assert len(expected) == 3
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    receiver.up()
    second = serve(first.folder, first.admin_password, first.database)
    agent = Agent(agent.host, agent.id, agent.credential, second.client(agent.credential))
    try:
        delivered = wait_for("every alert delivered", lambda: {
            b["alert_id"] for b in receiver.bodies} >= expected and receiver.bodies)
        assert {b["alert_id"] for b in delivered} == expected  # exactly those, none lost
        assert all(b["clause"] == "R-INC" and b["finding"]["host"] == "al-web1"
                   and b["finding"]["severity"] in ("high", "critical") for b in delivered)
        assert set(receiver.keys) == {f"baomi-alert-{a}" for a in expected}
        listed = wait_for("marked delivered", lambda: all(
            a["webhook"]["state"] == "delivered" for a in alerts_of(second))
            and alerts_of(second))
        assert all(a["webhook"]["delivered"] and a["state"] == "open" for a in listed)
        # the same finding again (a rescan) alerts no more; resolved then reopened, it does
        again = agent.send([event(6, check="ssh.permit_root_login", severity="critical")])
        assert again.status == 200 and len(alerts_of(second)) == 3
        root = next(a for a in listed if a["check"] == "ssh.permit_root_login")
        assert agent.send([event(7, kind="resolved", check="ssh.permit_root_login",
                                 ts="2026-12-02T11:00:00+00:00")]).status == 200
        assert agent.send([event(8, check="ssh.permit_root_login", severity="critical",
                                 ts="2026-12-02T12:00:00+00:00")]).status == 200
        assert len(wait_for("the reopened finding's alert", lambda: [
            b for b in receiver.bodies if b["finding"]["id"] == root["finding_id"]
            and b["alert_id"] != root["id"]])) >= 1
        # acknowledged: who, when, comment; no longer listed as open
        it = second.client(second.it)
        acked = it.post(f"{API}/findings/{root['finding_id']}/ack",
                        {"comment": "root login closed on al-web1"})
        assert acked.status == 200, acked.body
        mine = [a for a in alerts_of(second) if a["finding_id"] == root["finding_id"]]
        assert len(mine) == 2 and all(
            a["state"] == "acknowledged" and a["ack"]["by"] == "admin"
            and a["ack"]["comment"] == "root login closed on al-web1" and a["ack"]["at"]
            for a in mine)
        assert root["finding_id"] not in {a["finding_id"] for a in alerts_of(second,
                                                                             "?state=open")}
        # a resolved finding with an open alert still takes the acknowledgement
        fw = next(a for a in listed if a["check"] == "firewall.default_policy")
        assert agent.send([event(9, kind="resolved", check="firewall.default_policy",
                                 subject="input", ts="2026-12-02T13:00:00+00:00")]
                          ).status == 200
        assert it.post(f"{API}/findings/{fw['finding_id']}/ack",
                       {"comment": "fixed"}).status == 200
        assert len(alerts_of(second, "?state=open")) == 1  # the usb card's
        assert second.client(second.user("hr")).get(f"{API}/alerts").status == 403
        assert it.get(f"{API}/alerts?state=closed").status == 422
    finally:
        second.stop()


def test_silent_agent_becomes_a_finding_and_clears(
        backend: str, start_collector: StartCollector, syslog: tuple[str, socket.socket],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, sock = syslog
    # the limit and the threshold as collector-deploy passes the policy's: in the environment
    monkeypatch.setenv("BAOMI_AGENT_SILENT_MINUTES", "0.05")
    monkeypatch.setenv("BAOMI_ALERT_MIN_SEVERITY", "high")
    collector = start_collector(backend, alert_syslog_socket=path, agent_silent_severity="high")
    agent = collector.enrol("al-quiet1")
    assert agent.client.post(f"{API}/heartbeat", {"spool": 0}).status == 200
    it = collector.client(collector.it)

    def silent() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = it.get(
            f"{API}/findings?host=al-quiet1&check=agent.silent").body["findings"]
        return found

    (finding,) = wait_for("agent.silent open", lambda: [
        f for f in silent() if f["state"] == "open"], 20)
    assert finding["clauses"] == ["R-FIM", "R-LOG"] and finding["severity"] == "high"
    assert finding["details"]["limit_minutes"] == 0.05 and finding["details"]["last_heard"]
    (line,) = lines(sock, 1)
    assert "R-INC alert" in line and "agent.silent" in line and "al-quiet1" in line
    assert [a["kind"] for a in alerts_of(collector)] == ["silent"]
    assert agent.client.post(f"{API}/heartbeat", {"spool": 0}).status == 200
    (cleared,) = wait_for("agent.silent resolved", lambda: [
        f for f in silent() if f["state"] == "resolved"], 20)
    assert cleared["id"] == finding["id"] and cleared["resolved_at"]


def test_failed_logins_lock_the_user_and_the_address(
        backend: str, start_collector: StartCollector) -> None:
    collector = start_collector(backend, login_max_failures_per_user=3,
                                login_max_failures_per_address=5, login_lockout_seconds=60)
    it = collector.client(collector.it)  # a session from before the guessing
    anon = collector.client()
    for _ in range(3):
        assert anon.post(f"{API}/login", {"user": "admin", "password": "wrong"}).status == 401
    locked = anon.post(f"{API}/login", {"user": "admin", "password": collector.admin_password})
    assert locked.status == 429, locked.body
    assert "too many failed logins for user 'admin'" in locked.body["error"]
    assert 1 <= int(locked.headers["retry-after"]) <= 61
    # the address: two more failures (any user) reach its limit of 5
    for name in ("nobody1", "nobody2"):
        assert anon.post(f"{API}/login", {"user": name, "password": "x"}).status == 401
    refused = anon.post(f"{API}/login", {"user": "nobody3", "password": "x"})
    assert refused.status == 429 and "address 127.0.0.1" in refused.body["error"]
    # Each failure and each lockout is a line of the hash-chained log (R-LOG); a name that is
    # no user is logged by its length only (it may be a password typed in the wrong field);
    # attempts refused while locked are not logged.
    lines = [(ln["actor"], ln["action"], json.loads(ln["detail"]))
             for ln in it.get(f"{API}/log").body["lines"] if ln["action"].startswith("login.")]
    failed_admin = ("-", "login.failed", {"user": "admin", "from": "127.0.0.1"})
    assert lines == [
        failed_admin, failed_admin, failed_admin,
        ("-", "login.locked", {"user": "admin", "failures": 3, "seconds": 60}),
        ("-", "login.failed", {"unknown_user_length": 7, "from": "127.0.0.1"}),
        ("-", "login.failed", {"unknown_user_length": 7, "from": "127.0.0.1"}),
        ("-", "login.locked", {"from": "127.0.0.1", "failures": 5, "seconds": 60})], lines
    assert it.get(f"{API}/log/verify").body["ok"] is True
