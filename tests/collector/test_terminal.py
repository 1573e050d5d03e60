"""`baomi login`, `baomi hosts`, `baomi findings` against a real collector on loopback.

The collector is the real service (this folder's ``init_folder`` + ``serve``, SQLite) started
once for the module; the commands run as a user would run them (``python -m baomi``), with the
session under a temporary ``$BAOMI_STATE_DIR``.  Pure parts (URLs, --since) are here too.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from baomi.controller import session as s
from tests.collector.conftest import Collector, event, free_port, init_folder, serve

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
PASSWORD = "correct horse 12"


def test_urls_are_https_host_port_only() -> None:
    assert s.split_url("https://col1:8443") == ("col1", 8443)
    assert s.split_url("https://10.0.0.5") == ("10.0.0.5", 443)
    for bad in ("http://col1:8443", "col1:8443", "https://col1:84x3", "https://u@col1:1",
                "https://col1:8443/api"):
        with pytest.raises(s.SessionError, match="--collector"):
            s.split_url(bad)


def test_since_takes_durations_and_times() -> None:
    assert s.since("24h", NOW) == "2026-12-01T15:00:00+00:00"
    assert s.since("30m", NOW) == "2026-12-02T14:30:00+00:00"
    assert s.since("2w", NOW) == "2026-11-18T15:00:00+00:00"
    assert s.since("2026-12-01", NOW) == "2026-12-01T00:00:00+00:00"
    assert s.since("2026-12-01T08:00:00+08:00", NOW) == "2026-12-01T08:00:00+08:00"
    with pytest.raises(s.SessionError, match=r"--since 'yesterday'"):
        s.since("yesterday", NOW)


def _baomi(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "baomi", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector (SQLite) for the module; ws1 and srv1 report through real enrolment and
    ingest: ws1 a critical and an info R-TLS finding, srv1 a medium R-USB one."""
    folder = tmp_path_factory.mktemp("terminal") / "c"
    c = serve(folder, init_folder(folder))
    try:
        for user, role in (("audrey", "auditor"), ("harry", "hr")):
            made = c.client(c.it).post("/api/v1/users", {"user": user, "role": role,
                                                         "password": PASSWORD})
            assert made.status == 201, made.body
        for host, found in (("ws1", [("ssh.permit_root_login", "critical", "R-TLS"),
                                     ("ssh.macs", "info", "R-TLS")]),
                            ("srv1", [("usb.modules_refused", "medium", "R-USB")])):
            sent = c.enrol(host).send([
                event(i + 1, check=check, subject=f"{check} on {host}", severity=severity,
                      clauses=(clause,), found="y\x1b[31m")
                for i, (check, severity, clause) in enumerate(found)])
            assert sent.status == 200, sent.body
        yield c
    finally:
        c.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, BAOMI_STATE_DIR=str(tmp_path / "state"), COLUMNS="200")


def _url(c: Collector) -> str:
    return f"https://127.0.0.1:{c.port}"


def _login(c: Collector, env: dict[str, str], user: str = "admin",
           password: str | None = None) -> subprocess.CompletedProcess[str]:
    return _baomi("login", "--collector", _url(c), "--ca", c.ca, "--user", user,
                  "--password-stdin", env=env, stdin=(password or c.admin_password) + "\n")


def test_login_keeps_the_session_0600_and_hosts_lists_them(collector: Collector,
                                                          env: dict[str, str]) -> None:
    out = _login(collector, env)
    assert out.returncode == 0, out.stderr
    assert "as admin (role it)" in out.stdout
    path = Path(env["BAOMI_STATE_DIR"]) / "session.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["token"].startswith("bms_")
    hosts = _baomi("hosts", "--json", env=env)
    assert hosts.returncode == 0, hosts.stderr
    by_host = {h["host"]: h for h in json.loads(hosts.stdout)["hosts"]}
    assert by_host["ws1"]["open"]["critical"] == 1 and by_host["srv1"]["open"]["medium"] == 1
    table = _baomi("hosts", env=env)
    assert table.returncode == 0 and "ws1" in table.stdout and "2 hosts" in table.stdout


def _checks(out: subprocess.CompletedProcess[str]) -> set[str]:
    assert out.returncode == 0, out.stderr
    return {f["check"] for f in json.loads(out.stdout)["findings"]}


def test_findings_filters(collector: Collector, env: dict[str, str]) -> None:
    assert _login(collector, env).returncode == 0
    assert _checks(_baomi("findings", "--json", env=env)) == {
        "ssh.permit_root_login", "ssh.macs", "usb.modules_refused"}
    assert _checks(_baomi("findings", "--host", "ws1", "--json", env=env)) == {
        "ssh.permit_root_login", "ssh.macs"}
    assert _checks(_baomi("findings", "--clause", "R-USB", "--json", env=env)) == {
        "usb.modules_refused"}
    assert _checks(_baomi("findings", "--severity", "medium", "--json", env=env)) == {
        "ssh.permit_root_login", "usb.modules_refused"}
    assert _checks(_baomi("findings", "--since", "2026-12-02T11:00:00Z", "--json",
                          env=env)) == set(), "reported at 10:00, seen since 11:00: none"
    table = _baomi("findings", "--host", "ws1", env=env)
    assert table.returncode == 0 and "ssh.permit_root_login" in table.stdout
    assert "\x1b" not in table.stdout, "a host's escape sequence reached the terminal"


@pytest.mark.parametrize("args, message", [
    (("findings", "--clause", "R-NOPE"), "is not a clause ID"),
    (("findings", "--severity", "huge"), "'huge' is not one of"),
    (("findings", "--since", "yesterday"), "expected 30m, 24h, 7d, 2w"),
])
def test_bad_arguments_are_one_line(args: tuple[str, ...], message: str,
                                    env: dict[str, str]) -> None:
    out = _baomi(*args, env=env)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def _one_line_failure(out: subprocess.CompletedProcess[str], text: str) -> None:
    assert out.returncode == 1, out.stdout
    assert text in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_failures_say_what_to_do(collector: Collector, env: dict[str, str],
                                 tmp_path: Path) -> None:
    _one_line_failure(_baomi("hosts", env=env), "not logged in")
    _one_line_failure(_login(collector, env, password="wrong password 1"),
                      "wrong user or password")
    assert _login(collector, env).returncode == 0
    session = json.loads((Path(env["BAOMI_STATE_DIR"]) / "session.json").read_text())
    assert collector.client(session["token"]).post("/api/v1/logout").status == 204
    _one_line_failure(_baomi("hosts", env=env), "run baomi login")
    assert _login(collector, env, "harry", PASSWORD).returncode == 0
    _one_line_failure(_baomi("findings", env=env), "harry (role hr) may not read")
    init_folder(tmp_path / "other")  # another collector's CA
    _one_line_failure(_baomi("login", "--collector", _url(collector), "--ca",
                             str(tmp_path / "other" / "ca.pem"), "--user", "admin",
                             "--password-stdin", env=env,
                             stdin=collector.admin_password + "\n"),
                      "not one the pinned CA issued")
    _one_line_failure(_baomi("login", "--collector", f"https://127.0.0.1:{free_port()}",
                             "--ca", collector.ca, "--user", "admin", "--password-stdin",
                             env=env, stdin="x\n"), "cannot reach the collector")


def test_auditor_reads(collector: Collector, env: dict[str, str]) -> None:
    assert _login(collector, env, "audrey", PASSWORD).returncode == 0
    assert _checks(_baomi("findings", "--host", "srv1", "--json", env=env)) == {
        "usb.modules_refused"}
