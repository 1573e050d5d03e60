"""The regular audit from the collector host (R-AUD) on a lab of its own (colaud): col1 (a
systemd collector), srv1 and srv2 (the fleet).

In file order: srv2's root ``.ssh`` is a link somewhere else (a hostile host) → collector-deploy
authorises the collector's key on srv1 (``from=`` col1's address) and refuses srv2 naming
the link, writing nothing through it → the folder repaired but ``authorized_keys`` itself a
link: refused again, nothing written → srv2 repaired, deployed again → ``systemctl start
baomi-audit.service`` on col1 audits the fleet over SSH and uploads the run, visible through
``GET /api/v1/audits`` → ``collector.audit_timer`` passes → the timer disabled fails it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baomi import fleet_access as fleet
from baomi.collector.client import Client
from baomi.controls import collector as core
from baomi.deploy.wheels import ROOT
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, lab_name, running_lab
from tests.integration.controls import BAOMI, check, frozen_wheel_env

COLLECTOR, FLEET, HOSTILE = "col1", "srv1", "srv2"
PORT = 8443
# Where srv2's planted .ssh link points (a folder only root may write: sshd's StrictModes
# refuses keys under a world-writable one like /var/tmp, and the lab must still log in).
ELSEWHERE = "/etc/elsewhere"


@dataclass
class Lab:
    lab: LabHandle
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]
    first_seconds: float


def _deploy(lab: LabHandle, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str],
                                                           float]:
    started = time.monotonic()
    out = subprocess.run([*BAOMI, "collector-deploy", "-i", str(lab.inventory), "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return out, time.monotonic() - started


@pytest.fixture(scope="module")
def colaud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("colaud")
    env = frozen_wheel_env(tmp)
    with running_lab(lab_name("ca"), Request(servers=2, collector=1, systemd_collector=1)) as lab:
        assert lab.host(COLLECTOR).flavour == "systemd"
        # The hostile host: root's .ssh is a link to a folder elsewhere (a copy, so the lab
        # still logs in through it).
        planted = lab.ssh(HOSTILE, f"cp -a /root/.ssh {ELSEWHERE} && rm -rf /root/.ssh && "
                                   f"ln -s {ELSEWHERE} /root/.ssh")
        assert planted.returncode == 0, planted.stderr
        first, seconds = _deploy(lab, env)
        yield Lab(lab, env, first, seconds)


def _state(d: Lab) -> Path:
    return Path(d.env["BAOMI_STATE_DIR"])


def test_the_key_is_authorised_from_the_collector_only_and_a_link_is_refused(d: Lab) -> None:
    lab = d.lab
    print(f"first collector-deploy (collector + fleet keys): {d.first_seconds:.1f}s")
    assert d.first.returncode == 1, d.first.stdout[-3000:] + d.first.stderr[-2000:]
    report = json.loads(d.first.stdout)
    assert report["failed_hosts"] == [], report["failed_hosts"]
    keys = report["fleet_keys"]
    assert keys["failed_hosts"] == [HOSTILE], keys
    assert "/root/.ssh is a link or not a directory: refused" in keys["hosts"][HOSTILE]["error"]
    # Nothing was written through the link: the folder it points at has no collector key.
    assert lab.ssh(HOSTILE, f"grep -c baomi-collector-fleet {ELSEWHERE}/authorized_keys"
                   ).stdout.strip() == "0"
    assert lab.ssh(HOSTILE, f"ls -A {ELSEWHERE}").stdout.split() == ["authorized_keys"]
    # srv1: the collector's own key, for root, usable only from col1's address.
    address = lab.host(COLLECTOR).address
    line = lab.ssh(FLEET, "grep baomi-collector-fleet@col1 /root/.ssh/authorized_keys"
                   ).stdout.strip()
    assert line.startswith(f'restrict,from="{address}" ssh-ed25519 '), line
    assert lab.ssh(FLEET, "stat -c %a:%U /root/.ssh/authorized_keys").stdout.strip() == \
        "600:root"
    # The private half stays on the collector, root only; the controller has the public half.
    assert lab.ssh(COLLECTOR, f"stat -c %a:%U {fleet.KEY} {fleet.FLEET_DIR} {fleet.INVENTORY}"
                   ).stdout.split() == ["600:root", "700:root", "600:root"]
    got = _state(d) / "collector" / COLLECTOR
    assert sorted(p.name for p in got.iterdir()) == ["ca.pem", "fleet_addresses",
                                                     "fleet_key.pub"]
    assert line.split()[2] == (got / "fleet_key.pub").read_text().split()[1]
    # The key is refused from anywhere else: srv2 holding a copy of it cannot log in to srv1.
    private = lab.ssh(COLLECTOR, f"cat {fleet.KEY}").stdout
    lab.ssh(HOSTILE, f"umask 077; cat > /root/stolen <<'EOF'\n{private}EOF")
    stolen = lab.ssh(HOSTILE, f"ssh -i /root/stolen -o BatchMode=yes -o IdentitiesOnly=yes "
                              f"-o StrictHostKeyChecking=no root@{lab.host(FLEET).address} true")
    assert stolen.returncode != 0
    lab.ssh(HOSTILE, "rm -f /root/stolen")
    # The folder repaired, but now the file itself is a link (to a copy root keeps elsewhere,
    # so the lab still logs in): refused naming it, nothing written through it.
    keys_file = "/root/.ssh/authorized_keys"
    assert lab.ssh(HOSTILE, f"rm /root/.ssh && mv {ELSEWHERE} /root/.ssh && "
                            f"install -d -m 0700 {ELSEWHERE} && "
                            f"mv {keys_file} {ELSEWHERE}/keys && "
                            f"ln -s {ELSEWHERE}/keys {keys_file}").returncode == 0
    before = lab.ssh(HOSTILE, f"sha256sum < {ELSEWHERE}/keys").stdout
    linked, _ = _deploy(lab, d.env)
    assert linked.returncode == 1, linked.stdout[-3000:] + linked.stderr[-2000:]
    keys = json.loads(linked.stdout)["fleet_keys"]
    assert keys["failed_hosts"] == [HOSTILE], keys
    assert f"{keys_file} is a link or not a regular file: refused" in \
        keys["hosts"][HOSTILE]["error"]
    assert lab.ssh(HOSTILE, f"sha256sum < {ELSEWHERE}/keys").stdout == before
    assert lab.ssh(HOSTILE, f"test -L {keys_file}").returncode == 0  # left as it was
    assert not [n for n in lab.ssh(HOSTILE, "ls -A /root/.ssh").stdout.split()
                if n.startswith(".authorized_keys")], "a temporary file was left"
    # srv2 repaired by its owner: the next deploy authorises it.
    assert lab.ssh(HOSTILE, f"rm {keys_file} && mv {ELSEWHERE}/keys {keys_file} && "
                            f"rmdir {ELSEWHERE}").returncode == 0
    again, seconds = _deploy(lab, d.env)
    print(f"re-deploy (collector unchanged, srv2's key added): {seconds:.1f}s")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert lab.ssh(HOSTILE, "grep -c baomi-collector-fleet@col1 /root/.ssh/authorized_keys"
                   ).stdout.strip() == "1"


@pytest.fixture(scope="module")
def d(colaud: Lab) -> Lab:
    return colaud


def _audits(d: Lab) -> list[dict]:
    """The collector's audit runs, as the first admin sees them over the API."""
    lab = d.lab
    found = re.search(r"password \(shown once\): (\S+)",
                      lab.ssh(COLLECTOR, f"cat {core.FIRST_ADMIN}").stdout)
    assert found, "no first admin password on the host"
    password = found[1]
    ca = str(_state(d) / "collector" / COLLECTOR / "ca.pem")
    client = Client(lab.host(COLLECTOR).address, PORT, ca)
    login = client.post("/api/v1/login", {"user": "admin", "password": password})
    assert login.status == 200, login.body
    answer = Client(lab.host(COLLECTOR).address, PORT, ca, token=login.body["token"]
                    ).get("/api/v1/audits")
    assert answer.status == 200, answer.body
    return list(answer.body["audits"])


def _check(d: Lab) -> subprocess.CompletedProcess[str]:
    return check(d.lab, "test_collector", [COLLECTOR],
                 env={"BAOMI_STATE_DIR": d.env["BAOMI_STATE_DIR"]})


AUDIT_TIMER = f"checks/test_collector.py::test_check[ssh://{COLLECTOR}-collector.audit_timer]"


def test_the_timer_audits_the_fleet_and_uploads(d: Lab) -> None:
    lab = d.lab
    assert _audits(d) == []
    timer = lab.ssh(COLLECTOR, f"systemctl show -p TimersCalendar {fleet.TIMER}; "
                               f"systemctl is-enabled {fleet.TIMER}").stdout
    assert "OnCalendar=Mon *-*-* 00:00:00" in timer and "enabled" in timer, timer
    started = time.monotonic()
    run = lab.ssh(COLLECTOR, f"systemctl start {fleet.SERVICE}", timeout=1800)
    seconds = time.monotonic() - started
    journal = lab.ssh(COLLECTOR, f"journalctl -u {fleet.SERVICE} --no-pager -n 40").stdout
    print(f"baomi-audit.service (3 hosts over SSH from the collector): {seconds:.1f}s")
    assert run.returncode == 0, run.stderr + journal
    result = lab.ssh(COLLECTOR, f"systemctl show -p Result -p ExecMainStatus {fleet.SERVICE}"
                     ).stdout.split()
    assert "Result=success" in result, result
    assert "uploaded to the collector as audit" in journal, journal
    (audit,) = _audits(d)
    assert audit["hosts"] == 3 and audit["by"] == fleet.SESSION_NAME, audit
    assert audit["exit_status"] in (0, 1), audit  # every host audited (1: findings)
    # The run's session was ended, its file removed; its login is in the log under its name.
    assert lab.ssh(COLLECTOR, f"test -e {fleet.AUDIT_STATE}/session.json").returncode != 0
    # col1 has systemd: all nine checks apply, collector.audit_timer and policy_copy among them
    out = _check(d)
    assert out.returncode == 0 and "9 passed" in out.stdout, out.stdout[-3000:]


def test_a_disabled_timer_fails_the_check(d: Lab) -> None:
    lab = d.lab
    assert lab.ssh(COLLECTOR, f"systemctl disable --now {fleet.TIMER}").returncode == 0
    try:
        out = _check(d)
        assert out.returncode == 1, out.stdout[-3000:]
        assert f"FAILED {AUDIT_TIMER}" in out.stdout, out.stdout[-3000:]
        assert "disabled, inactive" in out.stdout, out.stdout[-3000:]
    finally:
        lab.ssh(COLLECTOR, f"systemctl enable --now {fleet.TIMER}")
    assert _check(d).returncode == 0
