"""The whole baseline on the lab's VM: every control applied to vm1, on a real Debian kernel.

Container hosts cannot prove R-ENC (no device-mapper) nor load kernel audit rules (audit only
from the initial PID namespace); vm1 can.  One lab (vm1 + bak1 for R-BAK's SFTP repository),
the demo's policy (policy.yaml plus a LUKS volume on /srv for group vm, PBKDF2 with 1000
iterations so the format is quick): the full apply succeeds, a re-apply changes nothing, one
backup runs, and then every check module passes on vm1: the sensitive paths sit on the LUKS
volume, the audit rules are loaded in the kernel (not skipped); what is skipped is not
applicable with its reason, e.g. GRUB's password (vm1 boots with -kernel, there is no
/boot/grub) and the encrypted root (vm1's groups are not in require_root_on).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controller.escrow import EscrowStore
from baomi.controls import antivirus as av
from baomi.deploy.common import ALL_CONTROLS
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.controls import ROOT, apply

# A hang guard, not a target: the whole baseline on the TCG VM took 485 s in CI's serial
# run and passed 600 s with another test file beside it on the second worker.
VM_APPLY_TIMEOUT = 1800

DEVICE = "/dev/disk/by-id/virtio-baomi-data"
TIMES: dict[str, float] = {}
EICAR = av.EICAR.decode()


def demo_policy() -> str:
    """scripts/demo's policy: the default one, a cheap KDF and vm1's data disk on /srv."""
    text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    cheap = text.replace("  pbkdf: argon2id ",
                         "  pbkdf: pbkdf2\n  pbkdf_force_iterations: 1000  ", 1)
    volume = cheap.replace("  volumes: []", f"  volumes: [{{device: {DEVICE}, mount: /srv, "
                           "filesystem: ext4, groups: [vm]}]", 1)
    # R-LOG: bak1 is the log host (its firewall then lets syslog over TLS in by itself).
    logs = volume.replace('  host: ""   ', "  host: bak1   ", 1)
    assert text != cheap != volume != logs and logs.count("bak1") == 1 + volume.count("bak1"), \
        "policy.yaml no longer has the lines this test edits"
    return logs


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabHandle, Path]]:
    if os.geteuid() != 0:
        pytest.fail("the VM lab needs root (tap device, bridge)", pytrace=False)
    tmp = tmp_path_factory.mktemp("vm-baseline")
    policy = tmp / "policy.yaml"
    policy.write_text(demo_policy(), encoding="utf-8")
    saved = {k: os.environ.get(k) for k in ("BAOMI_ESCROW_DIR", "BAOMI_STATE_DIR")}
    os.environ["BAOMI_ESCROW_DIR"] = str(tmp / "escrow")  # inherited by `baomi apply`
    EscrowStore(tmp / "escrow").keygen(tmp / "escrow.identity")  # private half apart
    os.environ["BAOMI_STATE_DIR"] = str(tmp / "state")
    started = time.monotonic()
    try:
        with running_lab(f"v{os.getpid() % 10_000_000}", Request(backup=1, vm=True)) as lab:
            TIMES["lab up (VM boot)"] = lab.up_seconds
            yield lab, policy
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        TIMES["module"] = time.monotonic() - started
        print("\nVM baseline times: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))


def test_full_baseline_on_the_vm_applies_reapplies_and_passes_every_check(
        vm_lab: tuple[LabHandle, Path]) -> None:
    lab, policy = vm_lab

    def run(command: str) -> str:
        result = lab.ssh("vm1", command, timeout=300)
        assert result.returncode == 0, f"{command!r}: {result.stderr.strip()}"
        return result.stdout

    started = time.monotonic()
    first = apply(lab, policy=policy, timeout=VM_APPLY_TIMEOUT)
    TIMES["first apply"] = time.monotonic() - started
    assert first["failed_hosts"] == []
    controls = first["hosts"]["vm1"]["controls"]
    assert set(controls) == set(ALL_CONTROLS), controls
    # Each control had work to do on the fresh VM (bak1 only serves the repository).
    assert set(controls.values()) == {"changed"}, controls

    started = time.monotonic()
    second = apply(lab, policy=policy, timeout=VM_APPLY_TIMEOUT)
    TIMES["re-apply"] = time.monotonic() - started
    for host, result in second["hosts"].items():
        assert set(result["controls"].values()) == {"unchanged"}, (host, result)

    # R-SEC on-access, which needs the VM's own kernel (fanotify): a file root wrote into a
    # sensitive path cannot be read by a member of its group while it is infected; the
    # scheduled scan then quarantines it (its record removed again: the audit expects none).
    run(f"id eve >/dev/null 2>&1 || useradd -m -G customer-data eve; printf %s '{EICAR}' "
        "> /srv/customers/eicar.txt")
    deadline = time.monotonic() + 120
    while True:  # clamonacc marks the folders shortly after it starts
        blocked = lab.ssh("vm1", "su eve -s /bin/sh -c 'cat /srv/customers/eicar.txt'")
        if "Operation not permitted" in blocked.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert blocked.returncode != 0 and "Operation not permitted" in blocked.stderr, blocked
    run("systemctl start baomi-av-scan.service")
    assert lab.ssh("vm1", "test -e /srv/customers/eicar.txt").returncode == 1
    assert '"action": "quarantined"' in run(f"cat {av.DETECTIONS_LOG}")
    run(f"rm {av.DETECTIONS_LOG}")
    # The sensitive paths live on the dm-crypt mapping the apply made of the blank disk.
    assert "crypt /srv" in run("lsblk -nr -o TYPE,MOUNTPOINTS /dev/vdb").splitlines()
    assert run("findmnt -n -o SOURCE -T /srv/customers").strip() == "/dev/mapper/baomi-srv"
    # R-LOG for real: the rules are in the running kernel and a read of a record is logged.
    assert "-w /srv/customers -p rwa -k baomi-confidential" in run("auditctl -l")
    count = "grep -c 'key=\"baomi-confidential\"' /var/log/audit/audit.log || true"
    before = int(run(count))
    run("umask 027; echo customer-7 > /srv/customers/record && cat /srv/customers/record")
    assert int(run(count)) > before
    # R-BAK's freshness, continuity and restore checks need one backup in the repository.
    started = time.monotonic()
    run("systemctl start baomi-backup.service")
    TIMES["first backup"] = time.monotonic() - started

    started = time.monotonic()
    # The baseline's checks (the agent and the collector have deploys of their own).
    audit = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header",
         "-o", "addopts=", "-rA", *(f"checks/test_{m}.py" for m in ALL_CONTROLS),
         "--hosts=vm1", f"--ssh-config={lab.ssh_config}",
         f"--inventory={lab.inventory}", f"--policy={policy}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    TIMES["checks"] = time.monotonic() - started
    assert audit.returncode == 0, audit.stdout[-5000:]
    for module in ALL_CONTROLS:
        assert f"PASSED checks/test_{module}.py::" in audit.stdout, (module, audit.stdout[-5000:])
    for check_id in ("sensitive_paths", "luks_header", "mounted"):
        assert f"PASSED checks/test_disk_encryption.py::test_check[ssh://vm1-disk_encryption." \
            f"{check_id}]" in audit.stdout
    assert "PASSED checks/test_audit_rules.py::test_check[ssh://vm1-audit_rules.loaded]" in \
        audit.stdout  # not skipped: the VM's kernel takes the rules
    for check_id in ("antivirus.on_access", "antivirus.daemon", "ssh_guard.jail",
                     "log_forwarding.target"):  # on-access runs here (fanotify)
        control = check_id.split(".")[0]
        assert f"PASSED checks/test_{control}.py::test_check[ssh://vm1-{check_id}]" in \
            audit.stdout, check_id
    # R-SEC's and R-ACL's live kernel values: judged here (container hosts skip them), and the
    # uncommon protocols refused by modprobe for real.
    for check_id in ("kernel.sysctl_live", "kernel.protocols_loaded",
                     "core_dumps.suid_dumpable_live", "usb.bus_modules_loaded"):
        control = check_id.split(".")[0]
        assert f"PASSED checks/test_{control}.py::test_check[ssh://vm1-{check_id}]" in \
            audit.stdout, check_id
    assert run("sysctl -n kernel.kptr_restrict fs.suid_dumpable fs.protected_regular "
               "net.ipv4.conf.all.rp_filter").split() == ["2", "0", "2", "1"]
    fresh_login = subprocess.run(  # its own PAM session (not the shared ControlMaster one)
        ["ssh", "-F", str(lab.ssh_config), "-o", "ControlPath=none", "vm1", "umask; ulimit -Hc"],
        capture_output=True, text=True, timeout=60)
    assert fresh_login.stdout.split() == ["0027", "0"], fresh_login  # pam_umask, pam_limits
    sctp = lab.ssh("vm1", "modprobe sctp; echo rc=$?; grep -c '^sctp ' /proc/modules || true")
    assert "rc=1" in sctp.stdout and sctp.stdout.rstrip().endswith("0"), sctp.stdout
    # Every skip is a check the runner found not applicable, with its reason ("SKIPPED [1]
    # FILE:LINE: CHECK_ID: not applicable: REASON"); none of R-ENC's applicable parts, R-LOG's
    # or R-BAK's is among them.
    skips = [line.split(": ", 1)[1] for line in audit.stdout.splitlines()
             if line.startswith("SKIPPED")]
    skipped = dict(line.split(": not applicable: ", 1) for line in skips
                   if ": not applicable: " in line)
    assert len(skipped) == len(skips), skips
    assert skipped.get("screen_lock.bootloader_password") == \
        "no GRUB on this host (/boot/grub absent)", skips
    assert skipped.get("disk_encryption.root_encrypted") == \
        "this host's groups are not in require_root_on", skips
    assert not [c for c in skipped if c.split(".")[0] in ("audit_rules", "backup")] and \
        not set(skipped) & {f"disk_encryption.{c}" for c in (
            "luks_header", "key_file", "crypttab", "fstab", "mounted", "sensitive_paths")}, skips
