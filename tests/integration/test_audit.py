"""`baomi audit` on a lab with hosts in different states (issue 15):

srv1 has the whole baseline applied (and a customer file whose content must never reach a
report), srv2 is fresh, ws1 is fresh with a live waiver for usb and an expired one for R-TLS,
srv9 is in the inventory but nothing answers for it.  One audit checks the statuses, the exit
status and each output (JSON, JUnit read strictly, the HTML page in headless Chromium from
Debian with a screenshot kept); plain `pytest checks` agrees on the waivers; the results go to
a real collector; one more apply and `baomi audit diff` names what changed.

Screenshots go to ``$BAOMI_ARTEFACTS/audit`` (else the test's tmp folder) and are kept.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.agent_env import running_collector
from tests.integration.controls import BAOMI, ROOT, apply
from tests.unit.junit_check import validate

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
MARKER = "客户合同-机密-4711"  # a customer file's content: never in any report


@pytest.fixture(scope="module")
def alab() -> Iterator[LabHandle]:
    with running_lab(f"au{os.getpid() % 10_000_000}",
                     Request(servers=2, workstations=1)) as handle:
        yield handle


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def setup(alab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Policy with the waivers, inventory with the ghost srv9, srv1 applied."""
    folder = tmp_path_factory.mktemp("audit")
    today = dt.date.today()
    waivers = f"""waivers:
  - control: usb
    hosts: [ws1]
    reason: 扫描仪需要U盘 the scanner needs a stick
    approver: 王经理
    expires: {today + dt.timedelta(days=60)}
  - clause: R-TLS
    hosts: [ws1]
    reason: legacy client
    approver: 李总
    expires: {today - dt.timedelta(days=1)}
  - clause: R-PRV
    hosts: [srv2]
    reason: migration accounts
    approver: 王经理
    expires: {today + dt.timedelta(days=30)}
"""
    text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    text, n = re.subn(r"^waivers: \[\].*$", waivers, text, flags=re.M)
    # No backup host in this lab (R-BAK has its own): the backup control is off, n.a.
    text, m = re.subn(r"^  enabled: true( +# deploy and check the secondary backup)",
                      r"  enabled: false\1", text, count=1, flags=re.M)
    assert n == 1 and m == 1
    policy = folder / "policy.yaml"
    policy.write_text(text, encoding="utf-8")
    ghost = {"ssh_hostname": "127.0.0.1", "ssh_port": closed_port(), "ssh_user": "root",
             "ssh_key": str(alab.key), "ssh_known_hosts_file": str(alab.known_hosts)}
    inv = alab.inventory.read_text(encoding="utf-8")
    inv = inv.replace("all = [\n", f"all = [\n    ('srv9', {ghost!r}),\n", 1)
    inv = re.sub(r"^servers = \[", "servers = ['srv9', ", inv, flags=re.M)
    inventory = folder / "inventory.py"
    inventory.write_text(inv, encoding="utf-8")
    apply(alab, limit=["srv1"], policy=policy)
    done = alab.ssh("srv1", f"umask 027; echo '{MARKER}' > /srv/customers/contract.txt")
    assert done.returncode == 0, done.stderr
    return {"folder": folder, "policy": policy, "inventory": inventory}


def baomi_audit(setup: dict[str, Path], *extra: str, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    cmd = [*BAOMI, "audit", "-i", str(setup["inventory"]), "--policy", str(setup["policy"]),
           "--report", str(setup["folder"] / "reports"), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, **(env or {})))


def reports(result: subprocess.CompletedProcess[str]) -> dict[str, Path]:
    found = dict(re.findall(r"^(json|junit|html) +(\S+)$", result.stdout, flags=re.M))
    assert set(found) == {"json", "junit", "html"}, result.stdout[-2000:]
    return {k: Path(v) for k, v in found.items()}


def statuses(doc: dict[str, Any], host: str, control: str) -> dict[str, str]:
    return {r["check"]: r["status"] for r in doc["results"]
            if r["host"] == host and r["control"] == control}


@pytest.fixture(scope="module")
def first(setup: dict[str, Path], alab: LabHandle) -> dict[str, Any]:
    hosts = ["srv1", "srv2", "ws1", "srv9"]
    result = baomi_audit(setup, *[a for h in hosts for a in ("--limit", h)])
    files = reports(result)
    doc = json.loads(files["json"].read_text(encoding="utf-8"))
    return {"result": result, "files": files, "doc": doc}


def test_statuses_and_exit(first: dict[str, Any]) -> None:
    result, doc = first["result"], first["doc"]
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.rstrip().endswith("a host did not answer or a check could not run)")
    assert "could not audit: srv9" in result.stdout
    # srv9: every check an error naming the unreachable host, nothing else.
    ghost = [r for r in doc["results"] if r["host"] == "srv9"]
    assert ghost and {r["status"] for r in ghost} == {"error"}
    assert all("srv9 could not be reached" in r["reason"] for r in ghost), ghost[0]
    # srv1 (applied) passes what srv2 (fresh) fails.
    assert set(statuses(doc, "srv1", "ssh").values()) == {"pass"}
    assert set(statuses(doc, "srv2", "ssh").values()) >= {"fail"}
    assert statuses(doc, "srv1", "passwords")["passwords.min_length"] == "pass"
    assert statuses(doc, "srv2", "passwords")["passwords.min_length"] == "fail"
    na = [r for r in doc["results"] if r["host"] == "srv1" and r["status"] == "not applicable"]
    assert na and all(r["reason"] for r in na)
    # ws1: usb failures waived with approver and expiry; R-TLS fails, its waiver expired.
    usb = [r for r in doc["results"] if r["host"] == "ws1" and r["control"] == "usb"
           and r["status"] != "not applicable"]
    assert {r["status"] for r in usb} == {"waived", "pass"}  # fresh ws1 fails the rest
    assert all(r["waiver"]["approver"] == "王经理" and not r["waiver"]["expired"]
               for r in usb if r["status"] == "waived")
    tls = [r for r in doc["results"] if r["host"] == "ws1" and "R-TLS" in r["clauses"]
           and r["status"] == "fail"]
    assert tls and all("expired on" in r["reason"] and r["waiver"]["expired"] for r in tls)
    states = {(w["clause"] or w["control"]): w["state"] for w in doc["waivers"]}
    assert states == {"usb": "in force", "R-TLS": "expired", "R-PRV": "stale"}
    assert any("no longer waives" in w for w in doc["warnings"])
    # Every record: clauses, evidence of what was looked at for failures, time.
    for r in doc["results"]:
        assert r["clauses"] and r["timestamp"] and r["duration"] >= 0
        if r["status"] == "fail":
            assert r["evidence"], r
    assert doc["summary"]["error"] == len(ghost)


def test_no_secret_and_no_customer_content(first: dict[str, Any]) -> None:
    for path in first["files"].values():
        text = path.read_text(encoding="utf-8")
        assert MARKER not in text, path
        assert not re.search(r"\$(y|6|5|2[aby]|gy)\$[^\s\"]{8,}", text), path  # no hashes
    assert MARKER not in first["result"].stdout


def test_junit_validates(first: dict[str, Any]) -> None:
    totals = validate(first["files"]["junit"].read_bytes())
    s = first["doc"]["summary"]
    assert totals == {"tests": len(first["doc"]["results"]), "failures": s["fail"],
                      "errors": s["error"], "skipped": s["waived"] + s["not applicable"]}


def test_html_report_in_chromium(first: dict[str, Any], tmp_path: Path) -> None:
    base = os.environ.get("BAOMI_ARTEFACTS")
    shots = (Path(base) if base else tmp_path) / "audit"
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}")
                    if not r.url.startswith("file:") else None)
            page.goto(first["files"]["html"].as_uri())
            rows = page.locator("#matrix tbody tr")
            assert rows.count() == 4
            assert page.locator("#matrix tbody tr[data-host=srv9] td.error").count() > 0
            assert "王经理" in page.locator("#waivers").inner_text()
            page.screenshot(path=str(shots / "audit-cover-matrix.png"), full_page=False)
            if page.locator("#c-R-USB").get_attribute("open") is None:
                page.locator("#c-R-USB summary").click()  # closed: open it (rows are lazy)
            usb = page.locator("#c-R-USB .rows")
            usb.locator("tr").first.wait_for()
            assert "waived by 王经理" in usb.inner_text()
            page.fill("#filter", "workstations")
            assert page.locator("#matrix tbody tr:not([hidden])").count() == 1
            assert "srv2" not in usb.inner_text() and "ws1" in usb.inner_text()
            page.locator("#c-R-USB").screenshot(path=str(shots / "audit-usb-workstations.png"))
        finally:
            browser.close()
    assert not errors, errors
    print(f"screenshots: {shots}")


def test_plain_pytest_agrees_on_waivers(first: dict[str, Any], setup: dict[str, Path],
                                        alab: LabHandle) -> None:
    out = setup["folder"] / "plain.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header", "-o",
         "addopts=", "-rx", "checks/test_usb.py", "checks/test_ssh.py", "--hosts=ws1",
         f"--ssh-config={alab.ssh_config}", f"--inventory={setup['inventory']}",
         f"--policy={setup['policy']}", f"--baomi-results={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:]  # ssh fails: its waiver expired
    assert "XFAIL" in done.stdout and "waived by 王经理 until" in done.stdout
    assert "expired on" in done.stdout
    plain = json.loads(out.read_text(encoding="utf-8"))
    for control in ("usb", "ssh"):
        assert statuses(plain, "ws1", control) == statuses(first["doc"], "ws1", control)


def test_upload_history_and_diff(first: dict[str, Any], setup: dict[str, Path],
                                 alab: LabHandle) -> None:
    state = setup["folder"] / "state"
    env = {"BAOMI_STATE_DIR": str(state)}
    with running_collector(setup["folder"] / "collector") as c:
        login = subprocess.run([*BAOMI, "login", "--collector", c.url, "--ca", c.ca, "--user",
                                "admin", "--password-stdin"], input=c.password + "\n",
                               cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, **env))
        assert login.returncode == 0, login.stderr
        before = baomi_audit(setup, "--limit", "srv2", "--upload", env=env)
        assert before.returncode == 1, before.stdout[-2000:] + before.stderr[-2000:]
        apply(alab, "ssh", limit=["srv2"], policy=setup["policy"])
        after = baomi_audit(setup, "--limit", "srv2", "--upload", env=env)
        assert "uploaded to the collector as audit" in after.stdout
        history = subprocess.run([*BAOMI, "audit", "history", "--json"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60,
                                 env=dict(os.environ, **env))
        assert history.returncode == 0, history.stderr
        runs = json.loads(history.stdout)["audits"]
        assert len(runs) == 2 and runs[0]["clauses"]["R-TLS"] > runs[1]["clauses"]["R-TLS"]
        latest = c.admin().get(f"/api/v1/audits/{runs[0]['id']}").body
        moved = {r["check"] for r in latest["changes"] if r["before"] == "fail"
                 and r["after"] == "pass"}
    a, b = reports(before)["json"], reports(after)["json"]
    diff = subprocess.run([*BAOMI, "audit", "diff", str(a), str(b), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert diff.returncode == 0, diff.stderr
    changes = json.loads(diff.stdout)["changes"]
    fixed = {r["check"] for r in changes if r["host"] == "srv2" and r["before"] == "fail"
             and r["after"] == "pass"}
    assert "ssh.ciphers" in fixed and fixed == moved
    assert all(r["check"].startswith(("ssh.", "screen_lock.")) for r in changes), changes
    text = subprocess.run([*BAOMI, "audit", "diff", str(a), str(b)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert "ssh.ciphers" in text.stdout and "fail" in text.stdout
    bad = subprocess.run([*BAOMI, "audit", "diff", str(a), str(setup["policy"])], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not JSON" in bad.stderr and "Traceback" not in bad.stderr
