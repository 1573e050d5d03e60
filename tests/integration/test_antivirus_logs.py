"""R-SEC virus protection and R-LOG logs off the host, on one lab: srv1 (plain), srv2 (systemd),
col1 (systemd, the log host).

Logs: a fresh lab fails, apply, re-apply unchanged, a tagged line from each sender arrives at
col1, a deleted forwarding file is named and repaired, and with col1's rsyslog stopped lines
wait in the senders' disk-assisted queues and arrive once it is back.  Virus protection: the
cycle, then a local user's EICAR file in /srv/customers is quarantined (0600 root, in the 0700
quarantine) and reported with R-SEC, while the same user's links (a crafted folder name makes
the scan's report nominate ``/srv/customers/victim``, a link to /etc/shadow) are neither
followed, moved nor deleted; the detection's syslog line reaches col1; signatures older than
the policy allows fail the check.  On-access scanning (clamonacc, fanotify) runs on srv2 (the
lab's nspawn lets fanotify through) and refuses the user's read of the infected file; srv1 has
no init to run it and says so; the VM proves it on its own kernel
(tests/integration/test_vm_baseline.py).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controls import antivirus as av
from baomi.controls import log_forwarding as lf
from baomi.controls.contract import HostContext
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from baomi.policy import load
from tests.integration.controls import ROOT, apply, check, outcomes

pytestmark = pytest.mark.integration
HOSTS = ["srv1", "srv2"]
ALL = ["srv1", "srv2", "col1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabHandle, Path, Path]]:
    tmp = tmp_path_factory.mktemp("av")
    mirror = tmp / "mirror"
    mirror.mkdir()
    # A vendor database of our own (never the official ones: memory): one made-up hash.
    (mirror / "vendor.hdb").write_text(f"{'0' * 32}:1234:Vendor.Sample\n", encoding="utf-8")
    text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    edited = text.replace('  mirror: ""  ', f"  mirror: {mirror}  ", 1).replace(
        '  host: ""   ', "  host: col1   ", 1)
    assert edited.count(str(mirror)) == 1 and "  host: col1 " in edited, "policy.yaml changed"
    policy = tmp / "policy.yaml"
    policy.write_text(edited, encoding="utf-8")
    saved = os.environ.get("BAOMI_STATE_DIR")
    os.environ["BAOMI_STATE_DIR"] = str(tmp / "state")  # the log CA, inherited by baomi apply
    try:
        with running_lab(f"av{os.getpid() % 10_000_000}",
                         Request(servers=2, systemd_servers=1, collector=1,
                                 systemd_collector=1)) as lab:
            yield lab, policy, mirror
    finally:
        print("\ntimes: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))
        if saved is None:
            os.environ.pop("BAOMI_STATE_DIR", None)
        else:
            os.environ["BAOMI_STATE_DIR"] = saved


def _ssh(lab: LabHandle, host: str, command: str) -> str:
    result = lab.ssh(host, command, timeout=120)
    assert result.returncode == 0, f"{host}: {command[:200]}\n{result.stdout}{result.stderr}"
    return result.stdout


def _wait(lab: LabHandle, host: str, command: str, seconds: float = 60) -> str:
    """Run ``command`` until it succeeds (no fixed sleeps)."""
    deadline = time.monotonic() + seconds
    while True:
        result = lab.ssh(host, command, timeout=60)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, f"{host}: {command} never succeeded"
            return result.stdout
        time.sleep(1)


def _address(lab: LabHandle, host: str) -> str:
    return _ssh(lab, "col1", f"getent hosts {host}").split()[0]


def _fresh_apply_reapply(lab: LabHandle, policy: Path, control: str, hosts: list[str],
                         *evidence: str) -> None:
    """A fresh lab fails naming ``evidence``; apply changes every host; a re-apply none
    (both timed into TIMES)."""
    fresh = check(lab, f"test_{control}", hosts, policy=policy)
    assert fresh.returncode == 1, fresh.stdout
    for line in evidence:
        assert line in fresh.stdout, (line, fresh.stdout[-3000:])
    for run, outcome in (("apply", "changed"), ("re-apply", "unchanged")):
        started = time.monotonic()
        result = apply(lab, control, limit=hosts, policy=policy)
        TIMES[f"{control} {run}"] = time.monotonic() - started
        assert set(outcomes(result, control).values()) == {outcome}, (run, result)


def test_logs_reach_the_log_host_and_wait_in_the_queue_while_it_is_away(
        env: tuple[LabHandle, Path, Path]) -> None:
    lab, policy, _ = env
    _fresh_apply_reapply(lab, policy, "log_forwarding", ALL,
                         f"{lf.RECEIVE_FILE}: expected baomi's file, found missing",
                         f"{lf.SEND_FILE}: expected baomi's file, found missing")
    remote = {h: f"{lf.REMOTE_DIR}/{_address(lab, h)}/{lf.REMOTE_LOG}" for h in HOSTS}
    for host in HOSTS:  # the deploy's own line: every sender has been heard once
        _wait(lab, "col1", f"grep -q '{lf.STARTED_TAG}: forwarding to col1:6514' {remote[host]}")
    passed = check(lab, "test_log_forwarding", ALL, policy=policy)
    assert passed.returncode == 0, passed.stdout[-3000:]

    for host in HOSTS:
        tag = f"baomi-test-{uuid.uuid4().hex[:12]}"
        _ssh(lab, host, f"logger -p authpriv.notice -t {tag} 'login test {host}'")
        _wait(lab, "col1", f"grep -q '{host} {tag}: login test {host}' {remote[host]}")
    assert _ssh(lab, "col1", f"stat -c '%a %U' {lf.REMOTE_DIR} {remote['srv2']}").split() == \
        ["700", "root", "600", "root"]

    # Someone removes the forwarding on srv2: named, and put back.
    _ssh(lab, "srv2", f"rm {lf.SEND_FILE} && systemctl restart rsyslog")
    drifted = check(lab, "test_log_forwarding", ["srv2"], policy=policy)
    assert f"{lf.SEND_FILE}: expected baomi's file, found missing" in drifted.stdout
    assert outcomes(apply(lab, lf.CONTROL.name, limit=["srv2"], policy=policy),
                    "log_forwarding") == {"srv2": "changed"}

    # The log host is away: lines wait in the senders' queues, then all arrive.
    _ssh(lab, "col1", "systemctl stop syslog.socket rsyslog")
    tags = {h: f"baomi-queued-{uuid.uuid4().hex[:12]}" for h in HOSTS}
    for host, tag in tags.items():
        for n in range(3):
            _ssh(lab, host, f"logger -p auth.warning -t {tag} 'queued {n}'")
    stopped = check(lab, "test_log_forwarding", ["col1"], policy=policy)
    assert "rsyslogd: expected running, found not running" in stopped.stdout
    for host, tag in tags.items():
        assert lab.ssh("col1", f"grep -q {tag} {remote[host]}").returncode == 1
    _ssh(lab, "col1", "systemctl start rsyslog")
    for host, tag in tags.items():
        _wait(lab, "col1", f"[ $(grep -c '{tag}: queued' {remote[host]}) -eq 3 ]", 120)


TIMES: dict[str, float] = {}
EICAR = av.EICAR.decode()


def _drop(lab: LabHandle, host: str) -> None:
    """A local user's files in the sensitive path: EICAR, and links meant to mislead the scan."""
    script = (
        "id alice >/dev/null 2>&1 || useradd -m alice; mkdir -p /srv/customers && "
        "chmod 1777 /srv/customers && cd /srv/customers && "
        f"su alice -s /bin/sh -c 'printf %s \"$0\" > eicar.txt && "
        "d=$(printf \"x\\n/srv/customers\") && mkdir -p \"$d\" && "
        "printf %s \"$0\" > \"$d/victim\" && "
        "ln -s /etc/shadow victim && mkdir sub && ln -s /etc sub/etc' "
        f"'{EICAR}'")
    _ssh(lab, host, script)


def test_virus_protection_cycle_eicar_quarantine_and_stale_signatures(
        env: tuple[LabHandle, Path, Path]) -> None:
    lab, policy, mirror = env
    for host in HOSTS:  # in the baseline, sensitive_paths makes it before clamonacc starts
        _ssh(lab, host, "mkdir -p /srv/customers && chmod 1777 /srv/customers")
    _fresh_apply_reapply(lab, policy, "antivirus", HOSTS,
                         f"{av.CLAMD_CONF}: expected baomi's settings, found another file",
                         f"{av.MANIFEST}: expected the mirror's manifest, found missing")
    passed = check(lab, "test_antivirus", HOSTS, policy=policy)
    assert passed.returncode == 0, passed.stdout[-3000:]
    # On-access: the systemd host runs clamonacc (the lab's nspawn lets fanotify through);
    # srv1 has no init to run it (its check says why).
    assert _ssh(lab, "srv2", f"systemctl is-active {av.ONACC_UNIT}").strip() == "active"
    assert _ssh(lab, "srv2", "systemctl is-active clamav-daemon").strip() == "active"

    # Tampering: the quarantine opened to everyone, on-access excluded, the scan's timer off.
    _ssh(lab, "srv1", f"chmod 755 /var/lib/baomi/quarantine && "
                      f"echo 'OnAccessExcludePath /srv/customers' >> {av.CLAMD_CONF}")
    _ssh(lab, "srv2", f"systemctl disable --now {av.TIMER}")
    drifted = check(lab, "test_antivirus", HOSTS, policy=policy)
    assert "/var/lib/baomi/quarantine: expected 700 root directory, found 755 root directory" \
        in drifted.stdout
    assert f"{av.CLAMD_CONF}: expected no setting beyond baomi's, found OnAccessExcludePath " \
           "/srv/customers" in drifted.stdout
    assert f"{av.TIMER}: expected enabled active, found disabled inactive" in drifted.stdout
    repaired = apply(lab, av.CONTROL.name, limit=HOSTS, policy=policy)
    assert set(outcomes(repaired, "antivirus").values()) == {"changed"}
    assert check(lab, "test_antivirus", HOSTS, policy=policy).returncode == 0

    # EICAR dropped by a local user: quarantined by the scheduled scan, reported, links intact.
    want = av.desired(HostContext.of(load(policy), {"servers"}, "srv1"))
    for host in HOSTS:
        _drop(lab, host)
    shadow = {h: _ssh(lab, h, "sha256sum /etc/shadow") for h in HOSTS}  # after useradd
    # On srv2 clamonacc already refuses alice's own infected file (prevention); srv1 has none.
    _wait(lab, "srv2", "su alice -s /bin/sh -c 'cat /srv/customers/eicar.txt' 2>&1 "
                       "| grep -q 'Operation not permitted'")
    assert lab.ssh("srv1", "su alice -s /bin/sh -c 'cat /srv/customers/eicar.txt'").returncode == 0
    _ssh(lab, "srv2", "systemctl start baomi-av-scan.service")  # what the timer starts
    assert lab.ssh("srv1", f"{av.HELPER_PATH} {want.helper_args}").returncode == 1  # as cron
    for host in HOSTS:
        assert lab.ssh(host, "test -e /srv/customers/eicar.txt").returncode == 1, host
        assert _ssh(lab, host, "readlink /srv/customers/victim").strip() == "/etc/shadow"
        assert _ssh(lab, host, "sha256sum /etc/shadow") == shadow[host]
        listing = _ssh(lab, host, "cd /var/lib/baomi/quarantine && stat -c '%a %U' . * && "
                                  "sha256sum *").split("\n")
        assert listing[0] == "700 root" and listing[1] == "600 root", listing
        assert listing[2].startswith(hashlib.sha256(av.EICAR).hexdigest()), listing
    found = check(lab, "test_antivirus", HOSTS, policy=policy)
    assert found.returncode == 1
    assert "[R-SEC 防火墙与入侵检测] /srv/customers/eicar.txt: expected no infection, found " \
           "baomi.EICAR-Test-File.UNOFFICIAL at " in found.stdout
    assert "/srv/customers/victim: expected no infection, found baomi.EICAR-Test-File." \
           "UNOFFICIAL at" in found.stdout and "not moved (not opened: a link or gone" \
           in found.stdout
    assert "FAILED checks/test_antivirus.py::test_check[ssh://srv1-antivirus.detections]" \
        in found.stdout
    # The detection's syslog line (auth) left srv2 for the log host.
    _wait(lab, "col1", f"grep -q 'baomi-antivirus: .*eicar.txt' {lf.REMOTE_DIR}/"
                       f"{_address(lab, 'srv2')}/{lf.REMOTE_LOG}")
    for host in HOSTS:
        _ssh(lab, host, f"rm -rf {av.DETECTIONS_LOG} /srv/customers/*")

    # Signatures older than the policy allows (7 days): a finding naming the file and age.
    old = time.time() - 30 * 86_400
    os.utime(mirror / "vendor.hdb", (old, old))
    apply(lab, av.CONTROL.name, limit=["srv1"], policy=policy)
    stale = check(lab, "test_antivirus", ["srv1"], policy=policy)
    assert "/var/lib/clamav/vendor.hdb: expected built within 7 days, found built 30.0 days " \
           "ago" in stale.stdout
    assert "1 failed" in stale.stdout, stale.stdout[-2000:]


GUESS = ("timeout 10 ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
         "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=3 {user}@srv2 true")


def test_ssh_guessing_gets_the_address_banned_and_a_good_address_not(
        env: tuple[LabHandle, Path, Path]) -> None:
    lab, policy, _ = env
    _fresh_apply_reapply(lab, policy, "ssh_guard", ["srv2"],
                         "/etc/fail2ban/jail.d/baomi-sshd.local: expected baomi's jail, "
                         "found missing")
    # srv1 has no systemd: unchanged, and its checks skipped with the reason.
    assert outcomes(apply(lab, "ssh_guard", limit=["srv1"], policy=policy), "ssh_guard") == \
        {"srv1": "unchanged"}
    assert check(lab, "test_ssh_guard", HOSTS, policy=policy).returncode == 0
    _ssh(lab, "srv2", "systemctl stop fail2ban")
    stopped = check(lab, "test_ssh_guard", ["srv2"], policy=policy)
    assert "systemctl fail2ban: expected enabled active, found enabled inactive" in stopped.stdout
    assert outcomes(apply(lab, "ssh_guard", limit=["srv2"], policy=policy), "ssh_guard") == \
        {"srv2": "changed"}

    guesser = _address(lab, "srv1")
    for n in range(5):  # policy: max_retry 5
        out = lab.ssh("srv1", GUESS.format(user=f"guess{n}"), timeout=30)
        assert "Permission denied" in out.stderr, out.stderr
    _wait(lab, "srv2", f"fail2ban-client get sshd banned | grep -qF \"'{guesser}'\"")
    refused = lab.ssh("srv1", GUESS.format(user="guess9"), timeout=30)
    assert "Connection refused" in refused.stderr, refused.stderr  # f2b's reject
    good = lab.ssh("col1", GUESS.format(user="someone"), timeout=30)
    assert "Permission denied" in good.stderr, good.stderr  # col1 still reaches sshd
    assert _address(lab, "col1") not in _ssh(lab, "srv2", "fail2ban-client get sshd banned")
    _ssh(lab, "srv2", "fail2ban-client unban --all")
