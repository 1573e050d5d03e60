"""kernel (R-SEC), core_dumps (R-ACL, R-DST), login_defaults (R-ACL, R-PWD) on the session
lab's srv2 (plain) and srv3 (systemd): fresh fails with evidence, apply passes, a re-apply
changes nothing, tampering is named, apply repairs.  What a user meets is proven too: an SSH
session's umask and hard core limit, the cost of a password hash set with chpasswd.  Container
hosts share the lab machine's kernel: the live values are skipped with that reason (the VM test
proves them) and this machine's own values are asserted unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

from baomi.controls import core_dumps, kernel, login_defaults
from baomi.lab.testing import LabHandle
from tests.integration.controls import apply, check, outcomes

CONTROLS = ("kernel", "core_dumps", "login_defaults")
HOSTS = ["srv2", "srv3"]
MACHINE = ("fs/protected_fifos", "fs/suid_dumpable", "kernel/kptr_restrict",
           "kernel/dmesg_restrict")


def machine_values() -> dict[str, str]:
    """This machine's own kernel values (a lab host must never change them)."""
    return {k: Path("/proc/sys", k).read_text().strip() for k in MACHINE
            if Path("/proc/sys", k).exists()}


def login(lab: LabHandle, host: str, command: str) -> str:
    """COMMAND in a new SSH login (its own PAM session: no shared ControlMaster connection)."""
    return subprocess.run(["ssh", "-F", str(lab.ssh_config), "-o", "ControlPath=none", host,
                           command], capture_output=True, text=True, timeout=60).stdout


def checks(lab: LabHandle, hosts: list[str]) -> str:
    out = ""
    for control in CONTROLS:
        result = check(lab, f"test_{control}", hosts)
        out += result.stdout
    return out


def test_kernel_core_dumps_login_defaults_cycle(lab: LabHandle) -> None:
    before = machine_values()
    fresh = checks(lab, HOSTS)
    for line in (f"{kernel.SYSCTL_FILE}: expected baomi's content, found missing",
                 "modprobe -n -v sctp: expected install /bin/false, found modprobe: FATAL",
                 f"{core_dumps.LIMITS_FILE}: expected baomi's content, found missing",
                 "/etc/login.defs UMASK: expected 027, found 022",
                 "/etc/pam.d/common-session: expected session\toptional\tpam_umask.so, found no "
                 "pam_umask line",
                 "/etc/pam.d/common-password pam_unix.so: expected yescrypt rounds=8, found "
                 "yescrypt, rounds=unset"):
        assert line in fresh, (line, fresh[-3000:])

    first = apply(lab, *CONTROLS, limit=HOSTS)
    for control in CONTROLS:
        assert set(outcomes(first, control).values()) == {"changed"}, (control, first)
    # Passing although this machine's own values differ (fs.protected_fifos 0 here): the live
    # checks are not applicable on container hosts, with the reason.
    for control in CONTROLS:
        result = check(lab, f"test_{control}", HOSTS)
        assert result.returncode == 0, result.stdout[-3000:]
    again = apply(lab, *CONTROLS, limit=HOSTS)
    for control in CONTROLS:
        assert set(outcomes(again, control).values()) == {"unchanged"}, (control, again)
    assert machine_values() == before  # written on the container hosts, never loaded here

    # What a person logging in meets (PAM session of sshd): umask 027, no core dumps.
    for host in HOSTS:
        assert login(lab, host, "umask; ulimit -Hc").split() == ["0027", "0"]
    # A password set the ordinary way is hashed at the policy's cost (yescrypt cost 8: "jCT";
    # Debian's default cost 5 gives "j9T").  Only the parameters of a throw-away account.
    made = lab.ssh("srv3", "useradd -m kshash && echo 'kshash:Long-enough-9' | chpasswd && "
                           "getent shadow kshash | cut -d: -f2 | cut -d'$' -f2,3; "
                           "userdel -r kshash 2>/dev/null")
    assert made.stdout.strip() == "y$jCT", made

    # Tamper as an administrator "fixing" things by hand would.
    lab.ssh("srv2", f"echo 'kernel.kptr_restrict = 0' >> /etc/sysctl.conf; "
                    f"sed -i 's/^fs.protected_regular = 2/fs.protected_regular = 0/' "
                    f"{kernel.SYSCTL_FILE}; rm {kernel.MODPROBE_FILE}; "
                    "echo '*  hard  core  unlimited' > /etc/security/limits.d/zz-debug.conf")
    lab.ssh("srv3", "sed -i 's/^UMASK.*/UMASK\t022/' /etc/login.defs; "
                    "sed -i '/pam_umask/d' /etc/pam.d/common-session; "
                    "sed -i 's/ rounds=8//' /etc/pam.d/common-password")
    drifted = checks(lab, HOSTS)
    for line in ("kernel.kptr_restrict in /etc/sysctl.conf:", "expected 2, found 0 (read after "
                 f"{kernel.SYSCTL_FILE})", f"fs.protected_regular in {kernel.SYSCTL_FILE}: "
                 "expected 2, found 0", f"{kernel.MODPROBE_FILE}: expected baomi's content, "
                 "found missing", "/etc/security/limits.d/zz-debug.conf:1: expected no hard "
                 "core limit above 0, found * hard core unlimited",
                 "/etc/login.defs UMASK: expected 027, found 022",
                 "/etc/pam.d/common-session: expected session\toptional\tpam_umask.so",
                 "pam_unix.so: expected yescrypt rounds=8, found yescrypt, rounds=unset"):
        assert line in drifted, (line, drifted[-3000:])
    repaired = apply(lab, *CONTROLS, limit=HOSTS)
    assert outcomes(repaired, "kernel") == {"srv2": "changed", "srv3": "unchanged"}
    assert outcomes(repaired, "login_defaults") == {"srv2": "unchanged", "srv3": "changed"}
    for control in CONTROLS:
        result = check(lab, f"test_{control}", HOSTS)
        assert result.returncode == 0, result.stdout[-3000:]
    assert lab.ssh("srv2", "tail -n1 /etc/sysctl.conf").stdout.startswith(
        "# disabled by baomi (R-SEC): kernel.kptr_restrict")
    assert login(lab, "srv3", "umask").strip() == "0027"
    assert login_defaults.PAM_UMASK_LINE in lab.ssh("srv3", "cat /etc/pam.d/common-session").stdout
    lab.ssh("srv2", "rm /etc/security/limits.d/zz-debug.conf")
    assert machine_values() == before
