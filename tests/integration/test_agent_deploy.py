"""The agent deployed on a lab of its own (lab agtd): col1 runs the collector (systemd, deployed
by `baomi collector-deploy`), srv2 (systemd) and srv1 (plain: no systemd, the supervisor
loop) get the agent by `baomi agent-deploy`, with a policy in tmp_path whose sensitive path
/srv/agtd-customers applies to group servers.

In file order, sharing one deploy (module fixture): deploy → the `agent` check passes on
both servers (not applicable on col1) and the unit is sandboxed as documented → a re-deploy
changes nothing (same venv, same agent process, no new enrolment) → `kill -9` of the agent:
systemd starts a new one on srv2, the supervisor on srv1 → a file changed under the
sensitive path on srv2 is a finding at the collector (GET /api/v1/findings?host=srv2)
within seconds (the latency is printed) → a named local user's write is a finding naming
that user and process (fanotify, inside the unit's sandbox) → that user swapping a folder for
a link to /etc between the write and the re-hash gets `agent.drift.swapped`, never a hash
or metadata of /etc/shadow → a stopped agent fails the check (systemd and supervisor).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baomi.controller import session as s
from baomi.controls import agent as core
from baomi.controls import antivirus as av
from baomi.controls import collector as col
from baomi.controls import supervised
from baomi.deploy.wheels import ROOT, copy_sources
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, lab_name, running_lab
from tests.integration.controls import BAOMI, check

COL, SRV, PLAIN = "col1", "srv2", "srv1"  # the lab makes the last server the systemd one
USER = "agtalice"
DATA = "/srv/agtd-customers"
QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


@dataclass
class Deployed:
    lab: LabHandle
    env: dict[str, str]
    policy: Path
    first: dict[str, Any]
    seconds: float
    queued_before: str  # this machine's live inotify queue limit before the deploy


def _baomi(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 1200,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAOMI, *args], cwd=ROOT, env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def _agent_deploy(lab: LabHandle, env: dict[str, str], policy: Path,
                  ) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    out = _baomi(env, "agent-deploy", "-i", str(lab.inventory), "--policy", str(policy),
                 "--json")
    assert out.returncode == 0, f"agent-deploy failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout), time.monotonic() - started


def _write_policy(path: Path) -> Path:
    path.write_text(f"""
sensitive_paths:
  - path: {DATA}
    level: 机密
    owner: root
    group: root
    groups: [servers]
agent:
  ship_interval_seconds: 2
collector:
  url: "https://{COL}:8443"
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("agtd")
    copy_sources(ROOT, tmp / "src")
    policy = _write_policy(tmp / "policy.yaml")
    env = dict(os.environ, BAOMI_STATE_DIR=str(tmp / "state"),
               BAOMI_WHEEL_SOURCE=str(tmp / "src"), COLUMNS="200")
    with running_lab(lab_name("ag"), Request(servers=2, collector=1, systemd_servers=1,
                                     systemd_collector=1)) as lab:
        assert lab.host(SRV).flavour == "systemd" and lab.host(COL).flavour == "systemd"
        assert lab.host(PLAIN).flavour == "plain"
        out = _baomi(env, "collector-deploy", "-i", str(lab.inventory), "--policy", str(policy))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        password = re.search(r"password \(shown once\): (\S+)",
                             lab.ssh(COL, f"cat {col.FIRST_ADMIN}").stdout)
        assert password, "no first admin password on the collector host"
        ca = Path(env["BAOMI_STATE_DIR"]) / "collector" / COL / "ca.pem"
        login = _baomi(env, "login", "--collector", f"https://{lab.host(COL).address}:8443",
                       "--ca", str(ca), "--user", "admin",
                       "--password-stdin", stdin=password[1] + "\n", timeout=60)
        assert login.returncode == 0, login.stderr
        for h in (SRV, PLAIN):
            lab.ssh(h, f"mkdir -p {DATA} && chmod 0700 {DATA} && echo one > {DATA}/a.txt")
            # A local user with a folder of her own under the sensitive path (a team share).
            lab.ssh(h, f"useradd -m {USER} && chmod 0711 {DATA} && mkdir {DATA}/shared && "
                       f"chown {USER}: {DATA}/shared && runuser -u {USER} -- sh -c "
                       f"'mkdir {DATA}/shared/team && echo mine > {DATA}/shared/team/shadow'")
        queued = QUEUED.read_text()
        report, seconds = _agent_deploy(lab, env, policy)
        yield Deployed(lab, env, policy, report, seconds, queued)


def _check(d: Deployed) -> subprocess.CompletedProcess[str]:
    return check(d.lab, "test_agent", [COL, SRV, PLAIN], d.policy)


def _main_pid(d: Deployed) -> str:
    return d.lab.ssh(SRV, f"systemctl show -p MainPID --value {core.UNIT}").stdout.strip()


def _wait(what: str, test: Callable[[], object], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if test():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _agent_pid(d: Deployed) -> str:
    """The supervised agent's PID on the plain host (the file the agent itself writes)."""
    pid = d.lab.ssh(PLAIN, f"cat {core.STATE_DIR}/agent.pid").stdout.strip()
    alive = pid.isdigit() and d.lab.ssh(PLAIN, f"kill -0 {pid}").returncode == 0
    return pid if alive else ""


def _heartbeat_fresh(d: Deployed, h: str = SRV) -> bool:
    out = d.lab.ssh(h, f"{core.VENV}/bin/baomi agent status --json --policy "
                         f"{core.POLICY_FILE} --state-dir {core.STATE_DIR}").stdout
    try:
        c = (json.loads(out).get("status") or {}).get("collector") or {}
    except ValueError:
        return False
    return bool(c.get("reachable")) and bool(c.get("last_ok"))


def test_deploy_enrols_and_the_check_passes(deployed: Deployed) -> None:
    outcomes = {h: r["controls"].get("agent", "—") for h, r in deployed.first["hosts"].items()}
    assert outcomes == {SRV: "changed", PLAIN: "changed"}, outcomes
    print(f"first agent deploy: {deployed.seconds:.1f}s")
    lab = deployed.lab
    assert lab.ssh(SRV, f"stat -c %a:%U {core.ENROLMENT}").stdout.strip() == "600:root"
    assert lab.ssh(SRV, f"ls {core.STATE_DIR}/.enrol-token").returncode != 0, "token left"
    sysctl = lab.ssh(SRV, f"cat {core.SYSCTL_FILE}").stdout
    assert "fs.inotify.max_queued_events = 1048576" in sysctl
    # srv1 is a container on this machine's kernel: the file waits for a boot, not applied.
    assert QUEUED.read_text() == deployed.queued_before, "the deploy changed this machine"
    # The unit as documented: sandboxed, yet reading the sensitive path.
    unit = lab.ssh(SRV, "systemctl show -p NoNewPrivileges,ProtectSystem,ProtectHome,Restart,"
                        f"Nice,IOSchedulingClass {core.UNIT}").stdout.split()
    assert {"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
            "Restart=always", "Nice=10"} <= set(unit), unit
    _wait("the first heartbeat answered", lambda: _heartbeat_fresh(deployed))
    out = _check(deployed)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "8 passed, 4 skipped" in out.stdout, out.stdout[-800:]
    assert lab.ssh(PLAIN, supervised.supervisor_running(core.PIDFILE, core.SUPERVISOR)
                   ).returncode == 0, "no supervisor on the plain host"
    # The collector knows the agent (the controller's session, role it).
    agents = _baomi(deployed.env, "hosts", "--json", timeout=60)
    assert agents.returncode == 0, agents.stderr
    (srv,) = [h for h in json.loads(agents.stdout)["hosts"] if h["host"] == SRV]
    assert srv["agent_id"] and srv["agent_state"] in ("active", "new"), srv


def test_redeploy_changes_nothing(deployed: Deployed) -> None:
    lab = deployed.lab
    venv = lab.ssh(SRV, f"readlink {core.VENV}").stdout
    enrolment = lab.ssh(SRV, f"sha256sum {core.ENROLMENT}").stdout
    pid, plain_pid = _main_pid(deployed), _agent_pid(deployed)
    report, seconds = _agent_deploy(lab, deployed.env, deployed.policy)
    print(f"agent re-deploy: {seconds:.1f}s (first {deployed.seconds:.1f}s)")
    for h in (SRV, PLAIN):
        assert report["hosts"][h]["controls"]["agent"] == "unchanged", report["hosts"][h]
    assert _agent_pid(deployed) == plain_pid, "a no-op deploy restarted the supervised agent"
    assert lab.ssh(SRV, f"readlink {core.VENV}").stdout == venv
    assert lab.ssh(SRV, f"sha256sum {core.ENROLMENT}").stdout == enrolment, "enrolled again"
    assert _main_pid(deployed) == pid, "a no-op deploy restarted the agent"


def test_a_killed_agent_is_restarted_by_systemd(deployed: Deployed) -> None:
    lab = deployed.lab
    pid = _main_pid(deployed)
    assert pid.isdigit() and pid != "0"
    assert lab.ssh(SRV, f"kill -9 {pid}").returncode == 0
    back = _wait("systemd restarting the killed agent", lambda: (
        _main_pid(deployed) not in ("0", "", pid)
        and lab.ssh(SRV, f"systemctl is-active -q {core.UNIT}").returncode == 0))
    print(f"systemd: killed agent running again after {back:.1f}s")
    _wait("the restarted agent's heartbeat", lambda: _heartbeat_fresh(deployed), 60)


def test_a_killed_agent_is_restarted_by_the_supervisor(deployed: Deployed) -> None:
    lab = deployed.lab
    pid = _agent_pid(deployed)
    assert pid, "no supervised agent on the plain host"
    assert lab.ssh(PLAIN, f"kill -9 {pid}").returncode == 0
    back = _wait("the supervisor restarting the killed agent",
                 lambda: _agent_pid(deployed) not in ("", pid), 60)
    print(f"supervisor: killed agent running again after {back:.1f}s")
    _wait("the restarted agent's heartbeat", lambda: _heartbeat_fresh(deployed, PLAIN), 60)


def _findings(d: Deployed, subject: str, check_id: str = "agent.drift.content",
              h: str = SRV) -> list[dict[str, Any]]:
    return [f for f in _all_findings(d, h) if f["subject"] == subject and f["check"] == check_id]


def _all_findings(d: Deployed, h: str = SRV) -> list[dict[str, Any]]:
    data = json.loads((Path(d.env["BAOMI_STATE_DIR"]) / s.SESSION_FILE).read_text())
    session = s.Session(**data)
    return list(s.get(session, "/api/v1/findings", {"host": h})["findings"])


def test_a_change_on_the_host_is_a_finding_at_the_collector(deployed: Deployed) -> None:
    subject = f"{DATA}/a.txt"
    # The restarted agent's start scan is done when its status names a scan.
    _wait("the agent's start scan", lambda: '"last_scan": {' in deployed.lab.ssh(
        SRV, f"cat {core.STATE_DIR}/status.json").stdout, 60)
    assert not _findings(deployed, subject)
    changed = time.monotonic()
    assert deployed.lab.ssh(SRV, f"echo two >> {subject}").returncode == 0
    _wait("the content finding at the collector", lambda: _findings(deployed, subject), 10)
    latency = time.monotonic() - changed
    print(f"change on {SRV} -> finding at the collector: {latency * 1000:.0f} ms "
          "(ssh, inotify, hash, spool, TLS, store, and the API query poll every 100 ms)")
    (finding,) = _findings(deployed, subject)
    assert finding["clauses"] == ["R-FIM"] and finding["state"] == "open"
    assert "two" not in json.dumps(finding), "a finding carries no file content"


def test_a_named_users_write_names_that_user_and_process(deployed: Deployed) -> None:
    """fanotify, inside the unit's sandbox (srv2) and under the supervisor (srv1): the finding
    names who wrote (a shell of the user's, still alive when the event is read; a writer
    that exits at once may be 'unknown', and details.actor says why)."""
    subject = f"{DATA}/shared/team/shadow"
    for h in (SRV, PLAIN):
        assert deployed.lab.ssh(h, f"runuser -u {USER} -- sh -c 'echo more >> {subject}; "
                                   "sleep 2; true'").returncode == 0  # `; true`: no exec
        _wait(f"the content finding of the user's write on {h}",
              lambda h=h: _findings(deployed, subject, h=h), 20)  # type: ignore[misc]
        (finding,) = _findings(deployed, subject, h=h)
        print(f"actor on {h}: {finding['found']}")
        status = deployed.lab.ssh(h, f"cat {core.STATE_DIR}/status.json").stdout
        assert f"by {USER} (uid " in finding["found"], (finding, status[-1500:])
        assert re.search(r" pid \d+ sh \(/(usr/)?bin/dash\)$", finding["found"]), finding
        assert "more" not in json.dumps(finding), "a finding carries no file content"


def test_a_folder_swapped_for_a_link_is_reported_never_followed(deployed: Deployed) -> None:
    """Hostile: the user writes the watched file, then at once replaces its folder with a link
    to /etc (the agent re-hashes team/shadow after the swap: 15 ms of coalescing)."""
    lab = deployed.lab
    shared = f"{DATA}/shared"
    shadow = lab.ssh(SRV, "sha256sum /etc/shadow; stat -c '%s %a %U:%G' /etc/shadow").stdout
    digest, _, size, mode, owner = shadow.split()
    metadata = f"f {int(mode, 8):04o} {owner} {size} bytes"  # how a finding shows a file
    # One process, so the steps take microseconds, well inside the agent's 15 ms.  Not a
    # rename of the folder: watchdog reports a moved folder's files as moved, which replaces
    # the pending write; removing it leaves the write pending for the path through the link.
    race = ("import os; f = open('team/shadow', 'a'); f.write('again'); f.close(); "
            "os.remove('team/shadow'); os.rmdir('team'); os.symlink('/etc', 'team')")
    assert lab.ssh(SRV, f"cd {shared} && runuser -u {USER} -- python3 -c \"{race}\""
                   ).returncode == 0
    subject = f"{shared}/team/shadow"
    _wait("the swap finding", lambda: _findings(deployed, subject, "agent.drift.swapped"), 20)
    (finding,) = _findings(deployed, subject, "agent.drift.swapped")
    print(f"swap: {finding['found']}")
    assert finding["found"] == f"{shared}/team is now a symbolic link to /etc; not followed"
    # The link itself: a folder turned link (kind), or a new link if the move went first.
    _wait("the link itself reported", lambda: any(
        _findings(deployed, f"{shared}/team", c) for c in ("agent.drift.kind",
                                                          "agent.drift.created")), 20)
    everything = json.dumps(_all_findings(deployed))
    assert digest not in everything, "the hash of /etc/shadow reached the collector"
    assert metadata not in everything, "the metadata of /etc/shadow reached the collector"
    assert "again" not in everything, "a finding carries no file content"


def test_an_antivirus_detection_reaches_the_collector_and_a_linked_record_is_not_read(
        deployed: Deployed) -> None:
    """R-SEC: a line baomi-av-scan records (as its record() writes it: root, 0600, appended)
    is the check's antivirus.detections finding at the collector within the agent's
    supervise tick; the record replaced by a link to /etc/shadow is not read."""
    lab, when = deployed.lab, int(time.time())
    subject = f"{DATA}/invoice.pdf"
    entry = json.dumps({"action": "quarantined", "clause": "R-SEC", "path": subject,
                        "quarantine": f"{when}-1-deadbeef", "sha256": "27" * 32,
                        "signature": "Eicar-Test-Signature", "time": when, "uid": 0},
                       sort_keys=True)
    record = f"{av.STATE_DIR}/detections.jsonl"
    append = (f"mkdir -p -m 0700 {av.STATE_DIR} && (umask 077; printf '%s\\n' "
              f"'{entry}' >> {record})")
    recorded = time.monotonic()
    assert lab.ssh(SRV, append).returncode == 0
    _wait("the detection at the collector",
          lambda: _findings(deployed, subject, av.DETECTIONS.id), 30)
    print(f"detection recorded on {SRV} -> finding at the collector: "
          f"{time.monotonic() - recorded:.1f} s (the agent looks every 10 s)")
    (finding,) = _findings(deployed, subject, av.DETECTIONS.id)
    assert (finding["clauses"], finding["severity"]) == (["R-SEC"], "critical"), finding
    assert finding["found"].endswith(f": quarantined as {when}-1-deadbeef"), finding
    # Hostile: the record swapped for a link to /etc/shadow: not opened (the agent says so
    # in its status), nothing of /etc/shadow reaches the collector.
    assert lab.ssh(SRV, f"mv {record} {record}.old && ln -s /etc/shadow {record}"
                   ).returncode == 0
    try:
        _wait("the agent to say the record is a link", lambda: "a link (not read)" in
              lab.ssh(SRV, f"cat {core.STATE_DIR}/status.json").stdout, 30)
        shadow_first = lab.ssh(SRV, "head -c 12 /etc/shadow").stdout
        assert shadow_first and shadow_first not in json.dumps(_all_findings(deployed))
    finally:
        lab.ssh(SRV, f"rm -f {record} && mv {record}.old {record}")


def test_a_stopped_agent_fails_the_check(deployed: Deployed) -> None:
    lab = deployed.lab
    assert lab.ssh(SRV, f"systemctl stop {core.UNIT}").returncode == 0
    supervisor = lab.ssh(PLAIN, f"cat {core.PIDFILE}").stdout.strip()
    assert supervisor.isdigit()
    assert lab.ssh(PLAIN, f"kill {supervisor} && kill {_agent_pid(deployed)}").returncode == 0
    try:
        out = _check(deployed)
        assert out.returncode == 1
        for h in (SRV, PLAIN):
            assert f"FAILED checks/test_agent.py::test_check[ssh://{h}-agent.running]" \
                in out.stdout, out.stdout[-2000:]
        assert "supervisor (no systemd): not running" in out.stdout, out.stdout[-3000:]
        assert "agent.installed]" not in out.stdout.split("short test summary")[-1]
    finally:
        lab.ssh(SRV, f"systemctl start {core.UNIT}")
