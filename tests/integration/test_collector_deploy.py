"""The collector deployed on lab hosts of its own (lab colt): col1 (plain: supervisor loop),
col2 (systemd: the sandboxed unit) and srv1, a host that reaches them over the lab's bridge.

The tests share one deploy (module fixture) and run in file order: deploy → checks pass →
re-deploy changes nothing → new wheels restart the service on a new venv → srv1 reaches it
over TLS with the pinned CA (and is refused without it) → `baomi login` / `baomi hosts` from
the controller see what srv1 reported → a stopped service fails the check → a killed service
comes back by itself.

The baomi wheel is built from a frozen copy of the checkout (``BAOMI_WHEEL_SOURCE``), so other
people's edits during the run cannot change the wheels between the two deploys.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baomi.collector.client import Client
from baomi.controls import collector as core
from baomi.deploy.wheels import ROOT
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, lab_name, running_lab
from tests.integration.controls import BAOMI, check, frozen_wheel_env

PLAIN, SYSTEMD, OTHER = "col1", "col2", "srv1"
PORT = 8443


@dataclass
class Deployed:
    lab: LabHandle
    env: dict[str, str]
    first: dict
    first_seconds: float
    tmp: Path


def _deploy(lab: LabHandle, env: dict[str, str]) -> tuple[dict, float]:
    started = time.monotonic()
    out = subprocess.run([*BAOMI, "collector-deploy", "-i", str(lab.inventory), "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"collector-deploy failed:\n{out.stdout}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout), time.monotonic() - started


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("colt")
    env = frozen_wheel_env(tmp)
    with running_lab(lab_name("ct"), Request(servers=1, collector=2, systemd_collector=1)) as lab:
        assert lab.host(PLAIN).flavour == "plain" and lab.host(SYSTEMD).flavour == "systemd"
        report, seconds = _deploy(lab, env)
        yield Deployed(lab, env, report, seconds, tmp)


def _outcomes(report: dict) -> dict[str, str]:
    return {h: r["controls"].get("collector", "—") for h, r in report["hosts"].items()}


def _check(d: Deployed) -> subprocess.CompletedProcess[str]:
    # The pinned CAs are in the test's state dir (the check reads them there).
    return check(d.lab, "test_collector", [PLAIN, SYSTEMD, OTHER],
                 env={"BAOMI_STATE_DIR": d.env["BAOMI_STATE_DIR"]})


def test_deploy_installs_and_every_check_passes(deployed: Deployed) -> None:
    assert _outcomes(deployed.first) == {PLAIN: "changed", SYSTEMD: "changed"}
    print(f"first deploy of two collectors: {deployed.first_seconds:.1f}s")
    for host in (PLAIN, SYSTEMD):
        pinned = Path(deployed.env["BAOMI_STATE_DIR"]) / "collector" / host / "ca.pem"
        assert "BEGIN CERTIFICATE" in pinned.read_text()
        # The password went to a root-only file on the host, never to the controller.
        mode = deployed.lab.ssh(host, f"stat -c %a:%U {core.FIRST_ADMIN}").stdout.strip()
        assert mode == "600:root"
        # The CA key stays on the host but out of the service's reach; the database URL is in
        # a root-only file, not on the service's command line.
        key = deployed.lab.ssh(host, f"stat -c %a:%U {core.CA_KEY} {core.ENV_FILE} "
                                     f"{core.CONF_DIR}").stdout.split()
        assert key == ["600:root", "600:root", "700:root"], key
        assert deployed.lab.ssh(host, f"setpriv --reuid={core.USER} --regid={core.USER} "
                                      f"--init-groups cat {core.CA_KEY}").returncode != 0
        assert deployed.lab.ssh(host, f"test -e {core.STATE_DIR}/ca.key").returncode != 0
        cmdline = deployed.lab.ssh(host, f"for p in $(pgrep -u {core.USER} -f 'collector "
                                         "serve'); do tr '\\0' ' ' < /proc/$p/cmdline; done"
                                   ).stdout
        assert "collector serve" in cmdline and "--db" not in cmdline, cmdline
        # the policy's alert settings reach the service through the same root-only file
        assert deployed.lab.ssh(host, "grep -qx \"BAOMI_ALERT_MIN_SEVERITY='critical'\" "
                                      f"{core.ENV_FILE}").returncode == 0
        environ = deployed.lab.ssh(host, f"for p in $(pgrep -u {core.USER} -f 'collector "
                                         "serve'); do tr '\\0' '\\n' < /proc/$p/environ; done"
                                   ).stdout.splitlines()
        assert "BAOMI_AGENT_SILENT_MINUTES=30" in environ, environ
        # the inventory's host → groups map for waivers: the service's to read, names only
        assert f"BAOMI_COLLECTOR_GROUPS={core.GROUPS_MAP}" in environ, environ
        assert deployed.lab.ssh(host, f"stat -c %a:%U:%G {core.GROUPS_MAP}").stdout.strip() \
            == f"640:root:{core.USER}"
        shipped = json.loads(deployed.lab.ssh(host, f"cat {core.GROUPS_MAP}").stdout)
        assert "collector" in shipped[PLAIN] and "ssh_hostname" not in json.dumps(shipped)
    out = _check(deployed)
    assert out.returncode == 0, out.stdout[-3000:]
    # col2 (systemd) passes all nine, collector.audit_timer included (its timer waits for its
    # first run), collector.offboard_runner, collector.waiver_groups and collector.policy_copy;
    # col1 (plain) passes seven, the timer and the offboarding runner not applicable without
    # systemd; srv1 none.
    assert "16 passed, 11 skipped" in out.stdout, out.stdout[-500:]
    unit = deployed.lab.ssh(SYSTEMD, "systemctl show -p User,NoNewPrivileges,ProtectSystem,"
                                     f"PrivateTmp,Restart {core.UNIT}").stdout
    assert {"User=baomi-collector", "NoNewPrivileges=yes", "ProtectSystem=strict",
            "PrivateTmp=yes", "Restart=always"} <= set(unit.split())


def test_redeploy_changes_nothing(deployed: Deployed) -> None:
    venvs = {h: deployed.lab.ssh(h, f"readlink {core.VENV}").stdout for h in (PLAIN, SYSTEMD)}
    pid = deployed.lab.ssh(SYSTEMD, f"systemctl show -p MainPID --value {core.UNIT}").stdout
    report, seconds = _deploy(deployed.lab, deployed.env)
    print(f"re-deploy: {seconds:.1f}s (first {deployed.first_seconds:.1f}s)")
    assert _outcomes(report) == {PLAIN: "unchanged", SYSTEMD: "unchanged"}
    assert {h: deployed.lab.ssh(h, f"readlink {core.VENV}").stdout
            for h in (PLAIN, SYSTEMD)} == venvs
    assert deployed.lab.ssh(SYSTEMD, f"systemctl show -p MainPID --value {core.UNIT}"
                            ).stdout == pid, "the service was restarted by a no-op deploy"


def _serving_pids(d: Deployed) -> dict[str, str]:
    return {h: d.lab.ssh(h, f"pgrep -u {core.USER} -f 'collector serve'").stdout.strip()
            for h in (PLAIN, SYSTEMD)}


def test_new_wheels_make_a_new_venv_and_restart_the_service(deployed: Deployed) -> None:
    before = {h: deployed.lab.ssh(h, f"readlink {core.VENV}").stdout.strip()
              for h in (PLAIN, SYSTEMD)}
    pids = _serving_pids(deployed)
    with open(Path(deployed.env["BAOMI_WHEEL_SOURCE"]) / "README.md", "a") as fh:
        fh.write("\nAn upgrade (test_collector_deploy).\n")
    report, seconds = _deploy(deployed.lab, deployed.env)
    print(f"upgrade (new baomi wheel): {seconds:.1f}s")
    assert _outcomes(report) == {PLAIN: "changed", SYSTEMD: "changed"}
    for host in (PLAIN, SYSTEMD):
        venv = deployed.lab.ssh(host, f"readlink {core.VENV}").stdout.strip()
        assert venv != before[host]
        running = deployed.lab.ssh(host, f"pgrep -af -u {core.USER} 'collector serve'").stdout
        assert f"{core.VENV}.venvs/{venv.rsplit('/', 1)[1]}/" in running, running
        assert _serving_pids(deployed)[host] != pids[host]
        # The previous venv is kept for a rollback, nothing older.
        kept = deployed.lab.ssh(host, f"ls {core.VENV}.venvs").stdout.split()
        assert sorted(kept) == sorted({venv.rsplit("/", 1)[1], before[host].rsplit("/", 1)[1]})


# Run on srv1 with its own python3: GET the health document from col2 by name over the
# bridge, verifying the server with the CA file given (or the system's CAs when none).
_FROM_OTHER = r"""
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1] if sys.argv[1] != "-" else None)
try:
    c = http.client.HTTPSConnection(sys.argv[2], int(sys.argv[3]), context=ctx, timeout=10)
    c.request("GET", "/api/v1/health")
    r = c.getresponse()
    print(r.status, r.read().decode(), c.sock.version())
except ssl.SSLCertVerificationError as exc:
    print("refused", exc.verify_message)
except OSError as exc:
    print("unreachable", exc)
"""


def _from_other(d: Deployed, ca_file: str, target: str = SYSTEMD) -> str:
    out = d.lab.ssh(OTHER, f"python3 -c {shlex.quote(_FROM_OTHER)} {ca_file} {target} {PORT}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _put(d: Deployed, host: str, path: str, content: str) -> None:
    out = d.lab.ssh(host, f"cat > {path} <<'EOF'\n{content}EOF")
    assert out.returncode == 0, out.stderr


def test_other_host_reaches_it_over_tls_only_with_the_pinned_ca(deployed: Deployed) -> None:
    state = Path(deployed.env["BAOMI_STATE_DIR"]) / "collector"
    _put(deployed, OTHER, "/root/col2-ca.pem", (state / SYSTEMD / "ca.pem").read_text())
    # col1's CA is a real CA too, but not the one that issued col2's certificate.
    _put(deployed, OTHER, "/root/col1-ca.pem", (state / PLAIN / "ca.pem").read_text())
    pinned = _from_other(deployed, "/root/col2-ca.pem")
    assert pinned.startswith('200 {"ok":true} TLSv1.3'), pinned
    assert _from_other(deployed, "/root/col1-ca.pem").startswith("refused"), "wrong CA accepted"
    assert _from_other(deployed, "-").startswith("refused"), "unpinned (system CAs) accepted"
    # The plain host's collector, by its name and with its own CA.
    assert _from_other(deployed, "/root/col1-ca.pem", PLAIN).startswith('200 {"ok":true}')


def _password(d: Deployed, host: str) -> str:
    text = d.lab.ssh(host, f"cat {core.FIRST_ADMIN}").stdout
    found = re.search(r"password \(shown once\): (\S+)", text)
    assert found, "no first admin password on the host"
    return found[1]


_AGENT = r"""
import http.client, json, ssl, sys, uuid
ctx = ssl.create_default_context(cafile="/root/col2-ca.pem")
def call(method, path, body, token=None):
    c = http.client.HTTPSConnection("col2", 8443, context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    c.request(method, path, json.dumps(body), headers)
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
status, enrolled = call("POST", "/api/v1/enroll", {"token": sys.argv[1], "host": "srv1"})
assert status == 201, (status, enrolled)
event = {"id": str(uuid.uuid4()), "seq": 1, "ts": "2026-12-02T15:00:00Z", "kind": "finding",
         "finding": {"check": "ssh.permit_root_login", "clauses": ["R-TLS"],
                     "severity": "critical", "subject": "sshd PermitRootLogin",
                     "expected": "no", "found": "yes"}}
print(call("POST", "/api/v1/events", {"events": [event]}, enrolled["credential"]))
"""


def _baomi(d: Deployed, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAOMI, *args], cwd=ROOT, env=d.env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_login_and_hosts_from_the_controller(deployed: Deployed) -> None:
    url = f"https://{deployed.lab.host(SYSTEMD).address}:{PORT}"
    ca = Path(deployed.env["BAOMI_STATE_DIR"]) / "collector" / SYSTEMD / "ca.pem"
    login = _baomi(deployed, "login", "--collector", url, "--ca", str(ca), "--user", "admin",
                   "--password-stdin", stdin=_password(deployed, SYSTEMD) + "\n")
    assert login.returncode == 0, login.stderr
    assert "role it" in login.stdout
    session = json.loads((Path(deployed.env["BAOMI_STATE_DIR"]) / "session.json").read_text())
    # srv1 enrols as an agent would and reports a finding over the bridge.
    made = Client(deployed.lab.host(SYSTEMD).address, PORT, str(ca), token=session["token"]
                  ).post("/api/v1/enrolment-tokens", {"host": OTHER})
    assert made.status == 201, made.body
    sent = deployed.lab.ssh(OTHER, f"python3 -c {shlex.quote(_AGENT)} "
                                   f"{shlex.quote(made.body['token'])}")
    assert sent.returncode == 0 and "(200," in sent.stdout, sent.stdout + sent.stderr
    hosts = _baomi(deployed, "hosts", "--json")
    assert hosts.returncode == 0, hosts.stderr
    (srv1,) = [h for h in json.loads(hosts.stdout)["hosts"] if h["host"] == OTHER]
    assert srv1["open"]["critical"] == 1 and srv1["acked_seq"] == 1
    findings = _baomi(deployed, "findings", "--host", OTHER, "--severity", "critical")
    assert findings.returncode == 0 and "ssh.permit_root_login" in findings.stdout


def _wait(what: str, test: Callable[[], bool], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if test():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _failed(host: str, check_id: str) -> str:
    return f"FAILED checks/test_collector.py::test_check[ssh://{host}-{check_id}]"


def test_a_stopped_service_fails_the_check(deployed: Deployed) -> None:
    lab = deployed.lab
    assert lab.ssh(SYSTEMD, f"systemctl stop {core.UNIT}").returncode == 0
    try:
        out = _check(deployed)
        assert out.returncode == 1
        for check_id in ("collector.service", "collector.listening", "collector.health"):
            assert _failed(SYSTEMD, check_id) in out.stdout, out.stdout[-2000:]
            assert _failed(PLAIN, check_id) not in out.stdout
        assert _failed(SYSTEMD, "collector.installed") not in out.stdout
    finally:
        lab.ssh(SYSTEMD, f"systemctl start {core.UNIT}")


def _serving(d: Deployed, host: str) -> bool:
    ca = f"/root/{host}-ca.pem"
    return _from_other(d, ca, host).startswith("200 ")


def test_a_killed_service_comes_back(deployed: Deployed) -> None:
    lab = deployed.lab
    _wait("col2 serving after the restart", lambda: _serving(deployed, SYSTEMD))
    pid = lab.ssh(SYSTEMD, f"systemctl show -p MainPID --value {core.UNIT}").stdout.strip()
    assert pid.isdigit() and pid != "0"
    assert lab.ssh(SYSTEMD, f"kill -9 {pid}").returncode == 0
    back = _wait("systemd restarting the killed collector", lambda: (
        (new := lab.ssh(SYSTEMD, f"systemctl show -p MainPID --value {core.UNIT}"
                        ).stdout.strip()) not in ("0", pid) and _serving(deployed, SYSTEMD)
        and bool(new)))
    print(f"systemd: killed collector serving again after {back:.1f}s")
    serve = lab.ssh(PLAIN, f"pgrep -u {core.USER} -f 'collector serve'").stdout.split()
    assert len(serve) == 1, serve
    assert lab.ssh(PLAIN, f"kill -9 {serve[0]}").returncode == 0
    back = _wait("the supervisor restarting the killed collector", lambda: (
        lab.ssh(PLAIN, f"pgrep -u {core.USER} -f 'collector serve'").stdout.split()
        not in ([], serve) and _serving(deployed, PLAIN)))
    print(f"supervisor: killed collector serving again after {back:.1f}s")
    out = _check(deployed)
    assert out.returncode == 0, out.stdout[-3000:]


def test_a_planted_link_as_the_ca_key_is_refused_never_followed(deployed: Deployed) -> None:
    """The service user (say, a compromised collector) plants ca.key -> /etc/shadow in its
    folder; the deploy's CA-key move must neither follow it nor change /etc/shadow."""
    lab = deployed.lab
    shadow = "sha256sum /etc/shadow && stat -c %a:%U:%h /etc/shadow"
    before = lab.ssh(SYSTEMD, shadow).stdout
    assert lab.ssh(SYSTEMD, f"setpriv --reuid={core.USER} --regid={core.USER} --init-groups "
                            f"ln -s /etc/shadow {core.STATE_DIR}/ca.key").returncode == 0
    out = subprocess.run([*BAOMI, "collector-deploy", "-i", str(lab.inventory), "--limit",
                          SYSTEMD, "--json"], cwd=ROOT, env=deployed.env, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "was not a regular file (a link?): removed, never followed" in out.stdout
    assert "untouched" in out.stdout, out.stdout[-2000:]
    assert lab.ssh(SYSTEMD, shadow).stdout == before
    assert lab.ssh(SYSTEMD, f"test -L {core.STATE_DIR}/ca.key || test -L {core.CA_KEY} || "
                            f"test -e {core.CA_KEY}.new").returncode != 0
    assert lab.ssh(SYSTEMD, f"stat -c %a:%U {core.CA_KEY}").stdout.strip() == "600:root"
    again = subprocess.run([*BAOMI, "collector-deploy", "-i", str(lab.inventory), "--limit",
                            SYSTEMD], cwd=ROOT, env=deployed.env, capture_output=True,
                           text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-2000:]
