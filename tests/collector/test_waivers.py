"""Waivers on findings at a real collector (uvicorn over TLS, SQLite and PostgreSQL): a finding
of a host under a live waiver is shown waived with its approver and expiry, one under an
expired waiver is shown failing with "expired"; the API, ``baomi findings`` and the dashboard's
host page agree, and so does the audit's own record of the same failing check."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from baomi.controls.contract import Check, Result
from baomi.policy import load
from baomi.results import record
from tests.collector.conftest import Collector, StartCollector, event
from tests.collector.webclient import Web

CHECK = Check("ssh.permit_root_login", ("R-TLS",), "root may not log in over SSH")


def _policy(path: Path, today: dt.date) -> tuple[str, str]:
    live, old = (today + dt.timedelta(days=30)).isoformat(), \
        (today - dt.timedelta(days=3)).isoformat()
    path.write_text(f"""\
waivers:
  - control: ssh
    hosts: [ws-live]
    reason: legacy kiosk until the migration
    approver: 王经理
    expires: {live}
  - clause: R-TLS
    hosts: [ws-old]
    reason: the old exception
    approver: 李总
    expires: {old}
""", encoding="utf-8")
    return live, old


def _ingest(c: Collector) -> None:
    for host in ("ws-live", "ws-old", "ws-none"):
        sent = c.enrol(host).send([event(1, subject=f"sshd PermitRootLogin on {host}")])
        assert sent.status == 200, sent.body


def _by_host(findings: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {f["host"]: f for f in findings}


def test_waived_and_expired_findings_in_the_api_cli_and_dashboard(
        backend: str, start_collector: StartCollector, tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    policy_file = tmp_path / "policy.yaml"
    live, old = _policy(policy_file, today)
    c = start_collector(backend, policy=str(policy_file))
    _ingest(c)
    api = c.client(c.it)

    # The API: every finding carries waived and waiver (the policy's Decision.as_dict()).
    found = _by_host(api.get("/api/v1/findings").body["findings"])
    assert found["ws-live"]["waived"] is True
    assert found["ws-live"]["waiver"] == {
        "index": 0, "clause": None, "control": "ssh", "hosts": ["ws-live"],
        "reason": "legacy kiosk until the migration", "approver": "王经理", "expires": live,
        "expired": False}
    assert found["ws-old"]["waived"] is False
    assert found["ws-old"]["waiver"]["expired"] is True
    assert found["ws-old"]["waiver"]["expires"] == old
    assert found["ws-none"]["waived"] is False and found["ws-none"]["waiver"] is None
    one = api.get(f"/api/v1/findings/{found['ws-live']['id']}").body
    assert one["waived"] is True and one["history"]
    assert [f["host"] for f in api.get("/api/v1/findings?waived=true").body["findings"]] == [
        "ws-live"]
    assert {f["host"] for f in api.get("/api/v1/findings?waived=false").body["findings"]} == {
        "ws-old", "ws-none"}
    assert api.get("/api/v1/findings?waived=maybe").status == 422
    # Counts: a waived finding is not an open failure.
    hosts = {h["host"]: h for h in api.get("/api/v1/hosts").body["hosts"]}
    assert hosts["ws-live"]["waived"] == 1 and hosts["ws-live"]["open"]["high"] == 0
    assert hosts["ws-old"]["waived"] == 0 and hosts["ws-old"]["open"]["high"] == 1
    summary = api.get("/api/v1/summary").body
    by_host = {h["host"]: h for h in summary["by_host"]}
    assert by_host["ws-live"]["compliant"] is True and by_host["ws-live"]["waived"] == 1
    assert by_host["ws-old"]["failing_clauses"] == ["R-TLS"]
    tls = next(x for x in summary["by_clause"] if x["clause"] == "R-TLS")
    assert (tls["hosts_failing"], tls["open"], tls["waived"]) == (2, 2, 1)

    # The audit path judges the same failing check on the same host the same way.
    policy = load(policy_file, today=today)
    for host in ("ws-live", "ws-old", "ws-none"):
        failing = Result("ssh", host, (CHECK,), (CHECK.finding("s", "no", "yes"),), {}, {})
        audited = record(failing, CHECK, policy, (), today)
        assert (audited.status == "waived") == found[host]["waived"], host
        assert audited.waiver == found[host]["waiver"], host

    # The terminal: baomi findings, as a user runs it.
    env = dict(os.environ, BAOMI_STATE_DIR=str(tmp_path / "state"), COLUMNS="400")

    def baomi(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "baomi", *args], input=stdin, env=env,
                              capture_output=True, text=True, timeout=60)

    logged = baomi("login", "--collector", f"https://127.0.0.1:{c.port}", "--ca", c.ca,
                   "--user", "admin", "--password-stdin", stdin=c.admin_password + "\n")
    assert logged.returncode == 0, logged.stderr
    as_json = baomi("findings", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert _by_host(json.loads(as_json.stdout)["findings"]) == found
    only = baomi("findings", "--waived", "yes", "--json")
    assert [f["host"] for f in json.loads(only.stdout)["findings"]] == ["ws-live"]
    table = baomi("findings")
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert f"waived by 王经理 until {live}" in text, table.stdout
    assert f"waiver expired on {old}" in text, table.stdout
    hosts_table = baomi("hosts")
    assert hosts_table.returncode == 0 and "waived" in hosts_table.stdout

    # The dashboard: the host pages, in English and in Chinese.
    web = Web(c.port, c.ca)
    assert web.login("admin", c.admin_password).status == 303
    zh_live = web.get("/hosts/ws-live").body
    assert f"已由 王经理 豁免，至 {live}" in zh_live
    web.jar["baomi_lang"] = "en"
    page = web.get("/hosts/ws-live")
    assert page.status == 200
    assert f"waived by 王经理 until {live}" in page.body
    old_page = web.get("/hosts/ws-old").body
    assert f"waiver expired on {old}" in old_page and "waived by" not in old_page
    clause = web.get("/clauses/R-TLS").body
    assert f"waived by 王经理 until {live}" in clause and f"waiver expired on {old}" in clause
    fleet = web.get("/fleet").body
    row = re.search(r"<tr><td><a href=\"/hosts/ws-live\">.*?</tr>", fleet)
    assert row and "badge waived" in row.group(0), fleet


def test_a_bad_policy_stops_serve_with_one_line(tmp_path: Path) -> None:
    from tests.collector.conftest import init_folder

    folder = tmp_path / "c"
    init_folder(folder)
    bad = tmp_path / "bad.yaml"
    bad.write_text("waivers:\n  - control: ssh\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "baomi.collector", "serve", str(folder),
                           "--policy", str(bad), "--listen", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "bad.yaml" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
