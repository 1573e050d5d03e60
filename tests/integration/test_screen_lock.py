"""R-LOCK on real lab hosts: fresh fails, apply passes, idempotent, tamper fails, apply repairs."""

from __future__ import annotations

import json
from pathlib import Path

from baomi.lab.testing import LabHandle
from tests.integration.controls import ROOT, apply, apply_raw, check, outcomes

C = "screen_lock"
HOSTS = ["ws1", "srv1"]


def test_screen_lock_cycle(lab: LabHandle, tmp_path: Path) -> None:
    fresh = check(lab, "test_screen_lock", HOSTS)
    assert fresh.returncode == 1, fresh.stdout
    assert "TMOUT in a login shell: expected 900" in fresh.stdout
    assert "gsettings writable org.gnome.desktop.session idle-delay" in fresh.stdout

    # --dry reports what would change and changes nothing.
    dry = apply(lab, C, limit=HOSTS, extra=("--dry",))
    assert set(outcomes(dry, C).values()) == {"would change"}
    assert lab.ssh("ws1", "test -e /etc/profile.d/baomi-tmout.sh").returncode == 1

    first = apply(lab, C, limit=HOSTS)
    assert set(outcomes(first, C).values()) == {"changed"}
    assert check(lab, "test_screen_lock", HOSTS).returncode == 0

    second = apply(lab, C, limit=HOSTS)
    assert outcomes(second, C) == {"ws1": "unchanged", "srv1": "unchanged"}

    # A normal user on the workstation cannot change the lock.
    user = lab.ssh("ws1", "useradd -m -s /bin/bash lockuser && su - lockuser -c "
                          "'gsettings writable org.gnome.desktop.session idle-delay; "
                          "gsettings set org.gnome.desktop.session idle-delay 0; echo rc=$?'")
    assert user.stdout.splitlines()[0] == "false", user.stdout + user.stderr
    assert "rc=0" not in user.stdout, user.stdout
    value = lab.ssh("ws1", "su - lockuser -c 'gsettings get org.gnome.desktop.session "
                           "idle-delay'")
    assert value.stdout.strip() == "uint32 300", value.stdout + value.stderr

    # Tamper as an administrator who wants the lock gone, and as a user editing sshd.
    lab.ssh("ws1", "rm /etc/dconf/db/local.d/locks/baomi-screen-lock && dconf update")
    lab.ssh("srv1", "sed -i 's/^TMOUT=900/TMOUT=0/' /etc/profile.d/baomi-tmout.sh")
    drifted = check(lab, "test_screen_lock", HOSTS)
    assert drifted.returncode == 1
    assert "/etc/dconf/db/local.d/locks/baomi-screen-lock: expected the baomi content, " \
           "found missing" in drifted.stdout
    assert "TMOUT in a login shell: expected 900, found '0'" in drifted.stdout

    repaired = apply(lab, C, limit=HOSTS)
    assert outcomes(repaired, C) == {"ws1": "changed", "srv1": "changed"}
    assert check(lab, "test_screen_lock", HOSTS).returncode == 0

    # A policy change shows up as a change on the next apply, and in the check.
    stricter = tmp_path / "policy.yaml"
    stricter.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "idle_seconds: 300", "idle_seconds: 120").replace(
        "shell_tmout_seconds: 900", "shell_tmout_seconds: 600"), encoding="utf-8")
    before = check(lab, "test_screen_lock", ["ws1"], policy=stricter)
    assert "dconf /org/gnome/desktop/session/idle-delay: expected uint32 120, found " \
           "'uint32 300'" in before.stdout
    # --diff shows the change of each managed file as it is made.
    diffed = apply_raw(lab, C, limit=["ws1"], policy=stricter, extra=("--diff",))
    assert diffed.returncode == 0, diffed.stderr[-2000:]
    assert "Will modify /etc/profile.d/baomi-tmout.sh" in diffed.stderr, diffed.stderr[-3000:]
    assert "- TMOUT=900" in diffed.stderr and "+ TMOUT=600" in diffed.stderr
    assert "- idle-delay=uint32 300" in diffed.stderr
    assert "+ idle-delay=uint32 120" in diffed.stderr
    changed = json.loads(diffed.stdout)
    assert outcomes(changed, C) == {"ws1": "changed"}
    assert check(lab, "test_screen_lock", ["ws1"], policy=stricter).returncode == 0
    apply(lab, C, limit=["ws1"])  # back to the default policy for other tests
