"""R-PWD on real lab hosts: a human account aged by apply, weak passwords refused by PAM,
tampering named by the check and repaired by apply, and no password hash ever leaving a host
(each check's and apply's output is compared, on the host itself, with the host's hashes)."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.lab.testing import LabHandle
from tests.integration.controls import ROOT, apply, apply_raw, check, outcomes

C = "passwords"
HOSTS = ["srv1", "srv3"]  # a plain host and a systemd host
USER = "pwuser"


def strong() -> str:
    """A fresh password with all four classes (made at run time, used only in the lab)."""
    return f"{secrets.token_hex(6)}Q!z{secrets.token_hex(2)}"


@pytest.fixture
def human(lab: LabHandle) -> Iterator[tuple[int, str]]:
    """A human account on srv1 with a password set ten days ago (so no rule blocks a change)."""
    password = strong()
    made = lab.ssh("srv1", f"useradd -m -s /bin/bash {USER} && "
                           f"echo {shlex.quote(f'{USER}:{password}')} | chpasswd && "
                           f"chage -d \"$(date -d '-10 days' +%F)\" {USER} && id -u {USER}")
    assert made.returncode == 0, made.stderr
    try:
        yield int(made.stdout.strip()), password
    finally:
        lab.ssh("srv1", f"userdel -r {USER} 2>/dev/null; true")


def ageing(lab: LabHandle) -> str:
    """pwuser's shadow fields 3-8 (never field 2)."""
    return lab.ssh("srv1", f"getent shadow {USER} | cut -d: -f3-8").stdout.strip()


def change_password(lab: LabHandle, current: str, new: str) -> subprocess.CompletedProcess[str]:
    """`passwd` as pwuser: the PAM password stack (common-password) decides, as for a person."""
    answers = " ".join(shlex.quote(a) for a in (current, *[new] * 3))
    return lab.ssh("srv1", f"printf '%s\\n' {answers} | su -s /bin/sh {USER} -c passwd 2>&1")


def hashes_found_in(lab: LabHandle, host: str, text: str) -> tuple[int, bool]:
    """(how many hashes the host holds, whether any is in TEXT), decided on the host itself."""
    script = ("t=$(mktemp); h=$(mktemp); cat > \"$t\"; "
              # each hash's digest (after its last '$'): found alone or in the whole hash
              "getent shadow | awk -F: '$2 ~ /^!?[$]/ { n = split($2, p, \"$\"); "
              "print p[n] }' > \"$h\"; "
              "n=$(wc -l < \"$h\"); if grep -qFf \"$h\" \"$t\"; then l=1; else l=0; fi; "
              "rm -f \"$t\" \"$h\"; echo \"$n $l\"")
    proc = subprocess.run(["ssh", "-F", str(lab.ssh_config), host, script], input=text,
                          capture_output=True, text=True, timeout=60, check=True)
    count, leaked = proc.stdout.split()
    return int(count), leaked == "1"


def assert_no_hash(lab: LabHandle, *texts: str) -> None:
    count, leaked = hashes_found_in(lab, "srv1", "\n".join(texts))
    assert count >= 1  # pwuser's hash is there to be leaked
    assert not leaked, "a password hash of srv1 reached the controller"


def test_passwords_cycle(lab: LabHandle, human: tuple[int, str], tmp_path: Path) -> None:
    uid, password = human

    fresh = check(lab, "test_passwords", HOSTS)
    assert_no_hash(lab, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 1, fresh.stdout
    assert f"account {USER} (uid {uid}): expected password ageing min 1, max 90, warn 7 " \
           "days, found min 0, max 99999, warn 7 days" in fresh.stdout
    assert "pam_pwquality minlen: expected at least 12, found 8 (the built-in default)" \
        in fresh.stdout
    assert "/etc/login.defs PASS_MAX_DAYS: expected 90, found 99999" in fresh.stdout
    # One test per host and stable check ID.
    for check_id in ("account_ageing", "min_length", "min_classes", "login_defs", "dropin"):
        assert f"FAILED checks/test_passwords.py::test_check[ssh://srv1-passwords.{check_id}]" \
            in fresh.stdout, fresh.stdout[-3000:]

    dry = apply(lab, C, limit=HOSTS, extra=("--dry",))
    assert set(outcomes(dry, C).values()) == {"would change"}
    assert ageing(lab).split(":")[1:4] == ["0", "99999", "7"]

    result = apply_raw(lab, C, limit=HOSTS, extra=("--diff",))
    assert_no_hash(lab, result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    assert check(lab, "test_passwords", HOSTS).returncode == 0
    # The existing account now has the policy's ageing (min 1, max 90, warn 7).
    assert ageing(lab).split(":")[1:4] == ["1", "90", "7"]
    assert "Maximum number of days between password change\t\t: 90" in lab.ssh(
        "srv1", f"LC_ALL=C chage -l {USER}").stdout

    again = apply(lab, C, limit=HOSTS)
    assert outcomes(again, C) == {"srv1": "unchanged", "srv3": "unchanged"}

    # PAM refuses weak passwords when the user changes their own (libpwquality's messages).
    short = change_password(lab, password, "Ab1!xyz")
    assert "BAD PASSWORD: The password is shorter than 12 characters" in short.stdout, short
    assert "password unchanged" in short.stdout
    classes = change_password(lab, password, "abcdefghijkl1234")
    assert "BAD PASSWORD: The password contains less than 3 character classes" \
        in classes.stdout, classes
    new = strong()
    accepted = change_password(lab, password, new)
    assert "password updated successfully" in accepted.stdout, accepted

    # Tamper: an administrator relaxes ageing, login.defs and the quality rules.
    lab.ssh("srv1", f"chage -M 99999 {USER}; echo 'minlen = 8' >> /etc/security/pwquality.conf")
    lab.ssh("srv3", "sed -i 's/^PASS_MAX_DAYS.*/PASS_MAX_DAYS\t99999/' /etc/login.defs; "
                    "rm /etc/security/pwquality.conf.d/50-baomi.conf; "
                    "sed -i '/pam_pwquality/d' /etc/pam.d/common-password")
    line = lab.ssh("srv1", "grep -c '' /etc/security/pwquality.conf").stdout.strip()
    drifted = check(lab, "test_passwords", HOSTS)
    assert_no_hash(lab, drifted.stdout, drifted.stderr)
    assert drifted.returncode == 1
    assert f"account {USER} (uid {uid}): expected password ageing min 1, max 90, warn 7 " \
           "days, found min 1, max 99999, warn 7 days" in drifted.stdout
    assert "pam_pwquality minlen: expected at least 12, found 8 " \
           f"(/etc/security/pwquality.conf:{line})" in drifted.stdout
    assert "/etc/login.defs PASS_MAX_DAYS: expected 90, found 99999 (line 165)" \
        in drifted.stdout
    assert "/etc/security/pwquality.conf.d/50-baomi.conf: expected the baomi content, found " \
           "missing" in drifted.stdout
    assert "/etc/pam.d/common-password: expected an active 'password requisite " \
           "pam_pwquality.so' line before pam_unix.so, found no pam_pwquality.so line" \
        in drifted.stdout
    for host, check_id in (("srv1", "account_ageing"), ("srv1", "min_length"),
                           ("srv3", "login_defs"), ("srv3", "dropin"), ("srv3", "pam_stack")):
        assert f"FAILED checks/test_passwords.py::test_check[ssh://{host}-passwords.{check_id}]" \
            in drifted.stdout, drifted.stdout[-3000:]

    repaired = apply_raw(lab, C, limit=HOSTS)
    assert_no_hash(lab, repaired.stdout, repaired.stderr)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert check(lab, "test_passwords", HOSTS).returncode == 0
    assert ageing(lab).split(":")[1:4] == ["1", "90", "7"]
    assert "# disabled by baomi (R-PWD): minlen = 8" in lab.ssh(
        "srv1", "tail -n1 /etc/security/pwquality.conf").stdout
    assert re.search(r"^password\s+requisite\s+pam_pwquality\.so", lab.ssh(
        "srv3", "cat /etc/pam.d/common-password").stdout, re.M)

    # A stricter policy shows in the check and the next apply.
    stricter = tmp_path / "policy.yaml"
    stricter.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8")
                        .replace("min_length: 12", "min_length: 14")
                        .replace("max_days: 90", "max_days: 60"), encoding="utf-8")
    before = check(lab, "test_passwords", ["srv1"], policy=stricter)
    assert "pam_pwquality minlen: expected at least 14, found 12 " \
           "(/etc/security/pwquality.conf.d/50-baomi.conf:2)" in before.stdout
    assert f"account {USER} (uid {uid}): expected password ageing min 1, max 60" \
        in before.stdout
    changed = apply(lab, C, limit=["srv1"], policy=stricter)
    assert outcomes(changed, C) == {"srv1": "changed"}
    assert check(lab, "test_passwords", ["srv1"], policy=stricter).returncode == 0
    assert ageing(lab).split(":")[1:4] == ["1", "60", "7"]
    apply(lab, C, limit=["srv1"])  # back to the default policy for other tests
