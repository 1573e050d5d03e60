"""HR's offboarding from a deployed collector, run as root (R-OFF) on a lab of its own (hroff):
col1 (a systemd collector), srv1 and srv2 (the fleet, each with the departing user).

In file order: collector-deploy (the fleet's key, the runner's units) → HR logs in to the
dashboard of col1 over TLS and submits the request → the service queues it, root's
``baomi-offboard.service`` (started by the path unit) runs ``baomi offboard`` with the fleet's
key → the user is frozen on srv1 and srv2 (locked, expired, nologin, key refused by a real
ssh) and the page and its progress.json show each host → a hostile name is refused on the
form, and rows forged straight into the database by the service's own user (root, ``../x``,
a system account) are refused by the runner (or per host by the command), nothing done on
the hosts → ``collector.offboard_runner`` passes, and fails with the path unit disabled.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from baomi import fleet_access as fleet
from baomi.collector.client import Client
from baomi.controls import collector as core
from baomi.deploy.wheels import ROOT
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, lab_name, running_lab
from tests.collector.webclient import Web
from tests.integration.controls import BAOMI, check, frozen_wheel_env
from tests.integration.test_offboarding import keypair, make_user, user_ssh

COLLECTOR, FLEET = "col1", ["srv1", "srv2"]
PORT = 8443
USER = "leaver"
RUNNER_CHECK = f"checks/test_collector.py::test_check[ssh://{COLLECTOR}-collector.offboard_runner]"


@dataclass
class Lab:
    lab: LabHandle
    env: dict[str, str]
    deploy_seconds: float
    hr: Web
    key: Path


def _state(d: Lab) -> Path:
    return Path(d.env["BAOMI_STATE_DIR"])


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("hroff")
    env = frozen_wheel_env(tmp)
    with running_lab(lab_name("hr"), Request(servers=2, collector=1, systemd_collector=1)) as lab:
        assert lab.host(COLLECTOR).flavour == "systemd"
        started = time.monotonic()
        out = subprocess.run([*BAOMI, "collector-deploy", "-i", str(lab.inventory), "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
        seconds = time.monotonic() - started
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        key = keypair(tmp, "leaver_key")
        for h in FLEET:
            make_user(lab, h, USER, key)
        # The first admin makes HR's account over the API; HR uses the dashboard.
        found = re.search(r"password \(shown once\): (\S+)",
                          lab.ssh(COLLECTOR, f"cat {core.FIRST_ADMIN}").stdout)
        assert found, "no first admin password on the host"
        ca = str(Path(env["BAOMI_STATE_DIR"]) / "collector" / COLLECTOR / "ca.pem")
        address = lab.host(COLLECTOR).address
        admin = Client(address, PORT, ca)
        login = admin.post("/api/v1/login", {"user": "admin", "password": found[1]})
        assert login.status == 200, login.body
        made = Client(address, PORT, ca, token=login.body["token"]).post(
            "/api/v1/users", {"user": "hr.li", "password": "hr-password-0001", "role": "hr"})
        assert made.status == 201, made.body
        hr = Web(PORT, ca, host=address)
        assert hr.login("hr.li", "hr-password-0001").status == 303
        yield Lab(lab, env, seconds, hr, key)


def _progress(d: Lab, rid: int) -> dict[str, Any]:
    page = d.hr.get(f"/offboarding/{rid}/progress.json")
    assert page.status == 200, page.body[:300]
    return dict(json.loads(page.body))


def _wait_done(d: Lab, rid: int, seconds: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = _progress(d, rid)
        if got["state"] not in ("queued", "running"):
            return got
        time.sleep(1)
    journal = d.lab.ssh(COLLECTOR, f"journalctl -u {fleet.OFFBOARD_SERVICE} --no-pager -n 40")
    pytest.fail(f"request {rid} still {got['state']} after {seconds} s: {got}\n{journal.stdout}")


def test_hr_offboards_through_the_dashboard_and_root_freezes_the_fleet(d: Lab) -> None:
    lab = d.lab
    print(f"\ncollector-deploy (collector, fleet keys, audit and offboarding units): "
          f"{d.deploy_seconds:.1f}s")
    # The service holds no key and is told the runner exists; the runner's units are root's.
    assert lab.ssh(COLLECTOR, f"setpriv --reuid={core.USER} --regid={core.USER} --init-groups "
                              f"cat {fleet.KEY}").returncode != 0
    assert lab.ssh(COLLECTOR, f"systemctl is-enabled {fleet.OFFBOARD_PATH} "
                              f"{fleet.OFFBOARD_TIMER}").stdout.split() == ["enabled", "enabled"]
    form = d.hr.get("/offboarding")
    assert form.status == 200 and 'id="offboard-form"' in form.body, form.body[:500]
    started = time.monotonic()
    sent = d.hr.post("/offboarding", {"csrf": form.csrf("offboard-form"), "user": USER,
                                      "ticket": "HR-2026-301", "reason": "resigned",
                                      "effective": datetime.now(UTC).date().isoformat()})
    assert sent.status == 303, sent.body[:500]
    rid = int(sent.location.rstrip("/").rsplit("/", 1)[1])
    got = _wait_done(d, rid)
    seconds = time.monotonic() - started
    print(f"HR's request → every host's outcome on the page (root's runner, "
          f"{len(got['hosts'])} hosts): {seconds:.1f}s")
    states = {h["host"]: h["state"] for h in got["hosts"]}
    assert states == {"col1": "absent", "srv1": "frozen", "srv2": "frozen"}, got
    assert got["state"] == "done" and got["created_by"] == "hr.li", got
    page = d.hr.get(f"/offboarding/{rid}")
    assert page.status == 200 and page.body.count('class="badge frozen"') == 2, page.body[-2000:]
    for h in FLEET:
        login = subprocess.run(user_ssh(lab, d.key, USER, h, "true"), capture_output=True,
                               text=True, timeout=30)
        assert login.returncode == 255 and "Permission denied" in login.stderr, login
        shadow = lab.ssh(h, f"getent shadow {USER} | cut -d: -f1,3-8").stdout.strip()
        assert shadow.split(":")[6] == "0", shadow
        assert lab.ssh(h, f"passwd -S {USER}").stdout.split()[1] == "L"
        assert lab.ssh(h, f"getent passwd {USER} | cut -d: -f7").stdout.strip() == \
            "/usr/sbin/nologin"
        record = json.loads(lab.ssh(h, f"cat /var/lib/baomi/offboarding/{USER}.json").stdout)
        assert record["ticket"] == "HR-2026-301", record
    # The ledger is root's, on the collector; the run was the runner's, not the service's.
    ledger = lab.ssh(COLLECTOR, f"stat -c '%a %U' {fleet.OFFBOARD_STATE} && grep -c "
                                f"HR-2026-301 {fleet.OFFBOARD_STATE}/offboarding/ledger.jsonl")
    assert ledger.stdout.split()[:2] == ["700", "root"] and int(ledger.stdout.split()[2]) >= 2, \
        ledger.stdout + ledger.stderr
    journal = lab.ssh(COLLECTOR, f"journalctl -u {fleet.OFFBOARD_SERVICE} --no-pager").stdout
    assert f"request {rid}: {USER} on 3 hosts" in journal, journal


FORGE = r"""
import json, sys, time
from datetime import datetime, timezone
from baomi.collector.db import Database
today = datetime.now(timezone.utc).date().isoformat()
db = Database("sqlite:////var/lib/baomi-collector/collector.db", pool=1)
def forge(tx):
    ids = []
    for user in sys.argv[1:]:
        tx.run("INSERT INTO offboard_requests (user_name, ticket, reason, effective, created, "
               "created_by, state) VALUES (?, 'FORGED-1', '--force', ?, ?, 'mallory', 'queued')",
               (user, today, time.time()))
        rid = tx.one("SELECT MAX(id) FROM offboard_requests")[0]
        tx.run("INSERT INTO offboard_hosts (request_id, host, state, detail, updated) VALUES "
               "(?, '10.0.0.1 --limit=all', 'queued', '', 0)", (rid,))
        ids.append(rid)
    return ids
print(json.dumps(db.transaction(forge)))
db.close()
with open("/var/lib/baomi-collector/offboard.trigger", "w") as f:
    f.write("forged\n")
"""


def test_hostile_names_are_refused_on_the_form_and_forged_rows_by_the_runner(d: Lab) -> None:
    lab = d.lab
    form = d.hr.get("/offboarding")
    for user in ("root", "../x"):
        sent = d.hr.post("/offboarding", {"csrf": form.csrf("offboard-form"), "user": user,
                                          "ticket": "HR-X", "reason": "r"})
        assert sent.status == 422 and "user" in sent.body, (user, sent.status)
    # The service's own user writes rows the form would never accept, and wakes the runner.
    forged = lab.ssh(COLLECTOR, f"cd / && setpriv --reuid={core.USER} --regid={core.USER} "
                                f"--init-groups {core.VENV}/bin/python -c {shlex.quote(FORGE)} "
                                "root ../x daemon")
    assert forged.returncode == 0, forged.stderr
    root_id, dots_id, daemon_id = json.loads(forged.stdout)
    for rid, said in ((root_id, "root is never offboarded"),
                      (dots_id, "is not a valid user name")):
        got = _wait_done(d, rid)
        assert got["state"] == "refused", got
        assert [h["host"] for h in got["hosts"]] == ["col1", "srv1", "srv2"], got
        assert all(h["state"] == "refused" and "refused by the runner" in h["detail"]
                   and said in h["detail"] for h in got["hosts"]), got
    # A valid name outside the policy's range: the command itself refuses it on every host
    # (a system account, UID below accounts.min_uid), nothing is changed there.
    got = _wait_done(d, daemon_id)
    assert {h["state"] for h in got["hosts"]} == {"refused"}, got
    assert all("system account" in h["detail"] for h in got["hosts"]), got
    for h in FLEET:
        assert lab.ssh(h, "ls /var/lib/baomi/offboarding/root.json "
                          "/var/lib/baomi/offboarding/daemon.json").returncode != 0
        assert lab.ssh(h, "getent passwd root | cut -d: -f7").stdout.strip() == "/bin/bash"
    log = lab.ssh(COLLECTOR, f"journalctl -u {fleet.OFFBOARD_SERVICE} --no-pager").stdout
    assert f"request {root_id}: refused: user: root is never offboarded" in log, log


def _check(d: Lab) -> subprocess.CompletedProcess[str]:
    return check(d.lab, "test_collector", [COLLECTOR],
                 env={"BAOMI_STATE_DIR": d.env["BAOMI_STATE_DIR"]})


def test_the_runner_check_passes_and_a_disabled_path_unit_fails_it(d: Lab) -> None:
    lab = d.lab
    out = _check(d)
    assert out.returncode == 0 and "9 passed" in out.stdout, out.stdout[-3000:]
    assert lab.ssh(COLLECTOR, f"systemctl disable --now {fleet.OFFBOARD_PATH}").returncode == 0
    try:
        out = _check(d)
        assert out.returncode == 1, out.stdout[-3000:]
        assert f"FAILED {RUNNER_CHECK}" in out.stdout, out.stdout[-3000:]
        assert "disabled, inactive" in out.stdout, out.stdout[-3000:]
    finally:
        lab.ssh(COLLECTOR, f"systemctl enable --now {fleet.OFFBOARD_PATH}")
    assert _check(d).returncode == 0
