"""screen_lock's parser and compare on output captured from real lab hosts (ws1)."""

from __future__ import annotations

from pathlib import Path

from baomi.controls import screen_lock as core
from baomi.observe import sections
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "screen_lock"
POLICY = load_text("")


def observed(name: str) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"))


def test_fresh_workstation_is_reported_with_evidence() -> None:
    seen = observed("fresh_ws1.out")
    assert seen.dconf_keys is None
    assert seen.writable["org.gnome.desktop.session idle-delay"] == "true"
    assert seen.sshd_effective["clientaliveinterval"] == "0"
    assert seen.sshd_effective["permitrootlogin"] == "without-password"
    findings = core.compare(core.desired(POLICY, {"workstations"}), seen)
    text = "\n".join(str(f) for f in findings)
    assert "[R-LOCK 开机与屏保密码] /etc/dconf/db/local.d/00-baomi-screen-lock: expected the " \
           "baomi content, found missing" in text
    assert "gsettings writable org.gnome.desktop.session idle-delay (as a normal user): " \
           "expected false (locked), found true" in text
    assert "sshd ClientAliveInterval: expected 300, found 0" in text
    assert "TMOUT in a login shell: expected 900, found ''" in text
    assert core.skipped(seen) == [
        "bootloader password: no GRUB on this host (/boot/grub absent)"]


def test_applied_workstation_is_compliant() -> None:
    seen = observed("applied_ws1.out")
    assert seen.dconf_values["/org/gnome/desktop/session/idle-delay"] == "uint32 300"
    assert seen.tmout_shell == "900"
    assert seen.tmout_readonly
    assert core.compare(core.desired(POLICY, {"workstations"}), seen) == []


def test_server_needs_no_desktop_lock() -> None:
    seen = observed("applied_ws1.out")
    servers = core.desired(POLICY, {"servers"})
    assert not servers.desktop
    assert core.compare(servers, seen) == []


def test_policy_values_reach_every_file() -> None:
    policy = load_text("screen_lock:\n  idle_seconds: 120\n  lock_delay_seconds: 5\n"
                       "  shell_tmout_seconds: 600\n  ssh_client_alive_interval: 60\n")
    want = core.desired(policy, {"workstations"})
    assert "idle-delay=uint32 120\n" in want.dconf_keys
    assert "lock-delay=uint32 5\n" in want.dconf_keys
    assert "TMOUT=600\nreadonly TMOUT\n" in want.tmout_file
    assert "ClientAliveInterval 60\n" in want.sshd_dropin
    seen = observed("applied_ws1.out")
    subjects = {f.subject for f in core.compare(want, seen)}
    assert "dconf /org/gnome/desktop/session/idle-delay" in subjects
    assert "sshd ClientAliveInterval" in subjects


def test_broken_sshd_config_is_a_critical_finding() -> None:
    text = (DATA / "applied_ws1.out").read_text(encoding="utf-8")
    start = text.index("==> sshd_T\n") + len("==> sshd_T\n")
    end = text.index("<== sshd_T rc=0")
    broken = text[:start] + "/etc/ssh/sshd_config line 3: Bad configuration option: Foo\n\n" \
        + "<== sshd_T rc=255" + text[end + len("<== sshd_T rc=0"):]
    assert sections(broken)["sshd_T"].rc == 255
    findings = core.compare(core.desired(POLICY, {"servers"}), core.parse(broken))
    assert [(f.subject, f.severity) for f in findings] == [("sshd -T", "critical")]
    assert "Bad configuration option: Foo" in findings[0].found


def test_bootloader_script_and_findings() -> None:
    digest = "grub.pbkdf2.sha512.10000.AB12.CD34"
    script = core.grub_password_script(digest)
    assert script.startswith("#!/bin/sh\n")
    assert f"password_pbkdf2 root {digest}\n" in script
    import pytest

    with pytest.raises(ValueError, match="not a grub-mkpasswd-pbkdf2 hash"):
        core.grub_password_script("hunter2")
    no_grub = observed("applied_ws1.out")
    assert core.compare_bootloader(no_grub) == []
    text = (DATA / "applied_ws1.out").read_text(encoding="utf-8").replace(
        "==> grub\nabsent\n", "==> grub\npresent\n")
    with_grub = core.parse(text)
    assert with_grub.grub_present and core.skipped(with_grub) == []
    assert [f.subject for f in core.compare_bootloader(with_grub)] == ["/boot/grub/grub.cfg"]
    text = text.replace("==> grub\npresent\n", "==> grub\npresent\nset superusers=\"root\"\n"
                        f"password_pbkdf2 root {digest}\n")
    assert core.compare_bootloader(core.parse(text)) == []
