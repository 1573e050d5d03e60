"""The dashboard in headless Chromium from Debian (/usr/bin/chromium, driven by Playwright via
``executable_path``; its own browser download is never used) against a real collector over
TLS and a real lab host:

an `it` person logs in, sees a finding arrive (posted through the API exactly as an agent
does), acknowledges it on the host page; an `hr` person files an offboarding request on the
page, watches each host's progress live, and afterwards the departed user's real SSH key is
refused by the lab host's sshd, while a host the collector cannot reach stays pending; the
collector's daily purge then runs once per day and deletes nobody before the due date.

Screenshots go to ``$BAOMI_ARTEFACTS/dashboard`` (else the test's tmp folder) and are kept.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from baomi.collector.config import load as load_config
from baomi.collector.db import Database
from baomi.collector.web.offboard import Offboarding
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.agent_env import Collector
from tests.integration.controls import ROOT
from tests.integration.test_offboarding import keypair, make_user, user_ssh

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
USER = "wbleaver"


@pytest.fixture(scope="module")
def wlab() -> Iterator[LabHandle]:
    with running_lab(f"wb{os.getpid() % 10_000_000}", Request(servers=1)) as handle:
        yield handle


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    base = os.environ.get("BAOMI_ARTEFACTS")
    folder = (Path(base) if base else tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns


def inventory_with_a_ghost(lab: LabHandle, folder: Path) -> Path:
    """The lab's inventory plus a host nobody answers for (connection refused at once)."""
    text = lab.inventory.read_text(encoding="utf-8")
    ghost = {"ssh_hostname": "127.0.0.1", "ssh_port": closed_port(), "ssh_user": "root",
             "ssh_key": str(lab.paths.key), "ssh_connect_timeout": 5}
    text = text.replace("all = [\n", f"all = [\n    ('wbghost', {ghost!r}),\n", 1)
    path = folder / "inventory.py"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def collector(tmp_path: Path, wlab: LabHandle) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    config = c.folder / "collector.toml"
    inventory = inventory_with_a_ghost(wlab, tmp_path)
    # The policy keeps its records at this collector: HR's freeze lands in its ledger stream.
    policy = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    policy = re.sub(r"(?m)^  url: .*$", f'  url: "{c.url}"', policy, count=1)
    policy = re.sub(r"(?m)^  records: local", "  records: collector", policy, count=1)
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    settings = {"offboard_inventory": str(inventory),
                "offboard_policy": str(tmp_path / "policy.yaml"),
                "offboard_state": str(tmp_path / "state")}
    config.write_text(config.read_text() + "".join(f'{k} = "{v}"\n'
                                                   for k, v in settings.items()))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        made = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield made
        finally:
            made.close()


def person(c: Collector, role: str) -> tuple[str, str]:
    name, password = f"wb{role}{secrets.token_hex(2)}", secrets.token_urlsafe(16)
    made = c.admin().post("/api/v1/users", {"user": name, "password": password, "role": role})
    assert made.status == 201, made.body
    return name, password


def log_in(browser: Browser, c: Collector, user: str, password: str) -> Page:
    # The collector's certificate is from its own private CA, which this throw-away browser
    # profile does not hold: TLS errors are ignored here (the API tests pin the CA).
    page = browser.new_context(ignore_https_errors=True, locale="zh-CN").new_page()
    page.goto(f"{c.url}/login")
    page.fill("#f-user", user)
    page.fill("#f-password", password)
    page.click("#login button")
    page.wait_for_load_state()
    return page


def shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def post_finding_as_agent(c: Collector, host: str) -> None:
    token = c.enrolment_token(host)
    from baomi.collector.client import Client

    agent = Client("127.0.0.1", c.port, c.ca)
    enrolled = agent.post("/api/v1/enroll", {"token": token, "host": host})
    assert enrolled.status == 201, enrolled.body
    agent.token = enrolled.body["credential"]
    sent = agent.post("/api/v1/events", {"events": [{
        "id": str(uuid.uuid4()), "seq": 1, "ts": datetime.now(UTC).isoformat(),
        "kind": "finding", "finding": {
            "check": "sensitive_paths.mode", "clauses": ["R-ACL"], "severity": "high",
            "subject": "/srv/customers mode", "expected": "0750", "found": "0777",
            "details": {"path": "/srv/customers"}}}]})
    agent.close()
    assert sent.status == 200 and sent.body["stored"] == 1, sent.body


def test_it_acknowledges_a_finding_and_hr_offboards_a_lab_user(
        wlab: LabHandle, collector: Collector, browser: Browser, artefacts: Path,
        tmp_path: Path) -> None:
    c = collector
    it_name, it_password = person(c, "it")
    it = log_in(browser, c, it_name, it_password)
    expect(it).to_have_url(f"{c.url}/fleet")
    expect(it.locator("h1")).to_have_text("总览")
    shot(it, artefacts, "1-fleet-before")

    post_finding_as_agent(c, "srv1")
    it.reload()
    row = it.locator("#hosts tbody tr", has_text="srv1")
    expect(row).to_contain_text("R-ACL")
    expect(it.locator("#severity-totals .badge.high")).to_have_text("1")
    shot(it, artefacts, "2-fleet-finding-arrived")

    row.locator("a", has_text="srv1").click()
    expect(it.locator("#findings")).to_contain_text("/srv/customers mode")
    controls = it.locator("#controls tbody tr")
    expect(controls.filter(has_text="sensitive_paths").locator(".badge.failing")).to_have_count(1)
    expect(controls.filter(has_text="firewall").locator(".badge.none")).to_have_count(1)
    expect(it.locator("#agents")).to_contain_text("active")
    it.fill("#findings form textarea, #findings form input[name=comment]",
            "known: fixed in change 7 by Friday")
    it.click("#findings form button")
    expect(it.locator("#findings")).to_contain_text("known: fixed in change 7 by Friday")
    expect(it.locator("#findings .badge.acknowledged")).to_have_count(1)
    expect(it.locator("#timeline")).to_contain_text("ack")
    shot(it, artefacts, "3-host-acknowledged")
    record = c.admin().get("/api/v1/findings?host=srv1").body["findings"][0]
    assert record["state"] == "acknowledged" and record["ack"]["by"] == it_name

    key = keypair(tmp_path, "wbleaver_key")
    make_user(wlab, "srv1", USER, key)
    before = subprocess.run(user_ssh(wlab, key, USER, "srv1", "echo in"),
                            capture_output=True, text=True, timeout=60)
    assert before.returncode == 0 and before.stdout.strip() == "in", before.stderr

    hr_name, hr_password = person(c, "hr")
    hr = log_in(browser, c, hr_name, hr_password)
    expect(hr).to_have_url(f"{c.url}/offboarding")
    assert hr.locator("a[href='/fleet']").count() == 0
    hr.click("text=English")
    # a protected account and a hostile name are refused on the form: nothing runs
    for name, said in (("root", "user: "), ("-oProxyCommand=x", "not a valid user name")):
        hr.fill("#f-user", name)
        hr.fill("#f-ticket", "--force")
        hr.fill("#f-reason", "test")
        hr.click("#offboard-form button")
        expect(hr.locator("#message")).to_contain_text(said)
        hr.goto(f"{c.url}/offboarding")
    expect(hr.locator("#requests tbody tr")).to_have_count(0)
    hr.fill("#f-user", USER)
    hr.fill("#f-ticket", "HR-2026-1202")
    hr.fill("#f-reason", "resigned; last day today")
    hr.click("#offboard-form button")
    expect(hr.locator("#progress tbody tr")).to_have_count(2)
    shot(hr, artefacts, "4-offboarding-running")
    # the page's own script sets data-state from each poll (the CSP forbids eval'd probes)
    expect(hr.locator("body[data-state]:not([data-state=running])")).to_have_count(
        1, timeout=300_000)
    expect(hr.locator("#progress tbody tr", has_text="srv1")).to_contain_text("frozen")
    expect(hr.locator("#progress tbody tr", has_text="wbghost")).to_contain_text("pending")
    shot(hr, artefacts, "5-offboarding-done")

    after = subprocess.run(user_ssh(wlab, key, USER, "srv1", "echo in"),
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 255 and "Permission denied" in after.stderr, after
    # The ledger is the collector's (collector.records: collector), written by the command's
    # own code through the API; nothing in the local state folder, no session file left.
    ledger = [r["record"] for r in
              c.admin().get("/api/v1/records/offboarding").body["records"]]
    states = {(e["host"], e["state"]) for e in ledger}
    assert ("srv1", "frozen") in states and ("wbghost", "pending") in states, states
    assert all(e["ticket"] == "HR-2026-1202" and e["operator"] == f"{hr_name} (dashboard)"
               for e in ledger)
    assert not (tmp_path / "state" / "offboarding").exists()
    assert not (tmp_path / "state" / "session.json").exists()
    log = c.admin().get("/api/v1/log").body["lines"]
    assert [x["actor"] for x in log if x["action"] == "offboarding.request"] == [hr_name]
    assert {x["actor"] for x in log if x["action"] == "offboarding.append"} == \
        {"collector (offboarding)"}
    with sqlite3.connect(c.folder / "collector.db") as conn:  # the runs' session was ended
        left = conn.execute("SELECT COUNT(*) FROM sessions WHERE name = ?",
                            ("collector (offboarding)",)).fetchone()
    assert left == (0,)
    assert c.admin().get("/api/v1/log/verify").body["ok"] is True

    # The daily purge as the collector's scheduler runs it (Offboarding.purge_once: the day
    # claimed in the database, then `baomi offboard --purge-due` on the same inventory and
    # ledger): wbleaver is not due until the end of next month, so nothing is deleted; the
    # unreachable host is tried again and stays pending; the same day never runs twice.
    db = Database(f"sqlite:///{c.folder / 'collector.db'}")  # the running collector's
    try:
        db.migrate()
        purger = Offboarding(load_config(c.folder), db)
        today = datetime.now(UTC).date()
        with ThreadPoolExecutor(1) as pool:
            ran = pool.submit(asyncio.run, purger.purge_once(today)).result()
            again = pool.submit(asyncio.run, purger.purge_once(today)).result()
    finally:
        db.close()
    assert ran is not None and again is None, (ran, again)
    waiting = [e for e in ran["events"] if e["state"] == "waiting"]
    assert [(e["user"], e["host"]) for e in waiting] == [(USER, "srv1")], ran
    assert any(e["host"] == "wbghost" and e["state"] == "unreachable" for e in ran["events"])
    assert wlab.ssh("srv1", f"id -u {USER}").returncode == 0  # still there, frozen
