"""screen_lock's parser and compare on output captured from real lab hosts (ws1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from baomi.controls import screen_lock as core
from baomi.controls.contract import HostContext, evaluate
from baomi.fixes.screen_lock import grub_password_script, install_grub_password
from baomi.observe import sections
from baomi.policy import Policy, load_text

DATA = Path(__file__).parent / "data" / "screen_lock"
POLICY = load_text("")


def want(groups: set[str], policy: Policy = POLICY) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, "ws1"))


WS = want({"workstations"})


def observed(name: str, text: str | None = None) -> core.Observed:
    return core.parse(text if text is not None else (DATA / name).read_text(encoding="utf-8"),
                      WS)


def test_fresh_workstation_is_reported_with_evidence() -> None:
    seen = observed("fresh_ws1.out")
    assert seen.dconf_keys is None
    assert seen.writable["org.gnome.desktop.session idle-delay"] == "true"
    assert seen.sshd_effective["clientaliveinterval"] == "0"
    assert seen.sshd_effective["permitrootlogin"] == "without-password"
    findings = core.compare(WS, seen)
    text = "\n".join(str(f) for f in findings)
    assert "[R-LOCK 开机与屏保密码] /etc/dconf/db/local.d/00-baomi-screen-lock: expected the " \
           "baomi content, found missing" in text
    assert "gsettings writable org.gnome.desktop.session idle-delay (as a normal user): " \
           "expected false (locked), found true" in text
    assert "sshd ClientAliveInterval: expected 300, found 0" in text
    assert "TMOUT in a login shell: expected 900, found ''" in text
    assert {f.check for f in findings} == {
        "screen_lock.dconf_files", "screen_lock.dconf_values", "screen_lock.user_override",
        "screen_lock.tmout_file", "screen_lock.shell_tmout", "screen_lock.ssh_idle"}
    assert core.skipped(WS, seen) == {
        "screen_lock.bootloader_password": "no GRUB on this host (/boot/grub absent)"}


def test_applied_workstation_is_compliant() -> None:
    seen = observed("applied_ws1.out")
    assert seen.dconf_values["/org/gnome/desktop/session/idle-delay"] == "uint32 300"
    assert seen.tmout_shell == "900"
    assert seen.tmout_readonly
    assert core.compare(WS, seen) == []


def test_server_needs_no_desktop_lock_and_says_so() -> None:
    seen = observed("applied_ws1.out")
    servers = want({"servers"})
    assert not servers.desktop
    assert core.compare(servers, seen) == []
    result = evaluate(core.CONTROL, "srv1", servers, observed("fresh_ws1.out"))
    assert result.status("screen_lock.dconf_files") == "not applicable"
    assert result.not_applicable["screen_lock.user_override"] == \
        "not a workstation (no desktop session to lock)"
    assert result.status("screen_lock.shell_tmout") == "fail"


def test_policy_values_reach_every_file() -> None:
    policy = load_text("screen_lock:\n  idle_seconds: 120\n  lock_delay_seconds: 5\n"
                       "  shell_tmout_seconds: 600\n  ssh_client_alive_interval: 60\n")
    stricter = want({"workstations"}, policy)
    assert "idle-delay=uint32 120\n" in stricter.dconf_keys
    assert "lock-delay=uint32 5\n" in stricter.dconf_keys
    assert "TMOUT=600\nreadonly TMOUT\n" in stricter.tmout_file
    assert "ClientAliveInterval 60\n" in stricter.sshd_dropin
    seen = observed("applied_ws1.out")
    subjects = {f.subject for f in core.compare(stricter, seen)}
    assert "dconf /org/gnome/desktop/session/idle-delay" in subjects
    assert "sshd ClientAliveInterval" in subjects


def test_broken_sshd_config_is_a_critical_finding() -> None:
    text = (DATA / "applied_ws1.out").read_text(encoding="utf-8")
    start = text.index("==> sshd_T\n") + len("==> sshd_T\n")
    end = text.index("<== sshd_T rc=0")
    broken = text[:start] + "/etc/ssh/sshd_config line 3: Bad configuration option: Foo\n\n" \
        + "<== sshd_T rc=255" + text[end + len("<== sshd_T rc=0"):]
    assert sections(broken)["sshd_T"].rc == 255
    findings = core.compare(want({"servers"}), observed("", broken))
    assert [(f.check, f.subject, f.severity) for f in findings] == [
        ("screen_lock.ssh_idle", "sshd -T", "critical")]
    assert "Bad configuration option: Foo" in findings[0].found


def test_bootloader_script_and_findings() -> None:
    digest = "grub.pbkdf2.sha512.10000.AB12.CD34"
    script = grub_password_script(digest)
    assert script.startswith("#!/bin/sh\n")
    assert f"password_pbkdf2 root {digest}\n" in script
    with pytest.raises(ValueError, match="not a grub-mkpasswd-pbkdf2 hash"):
        grub_password_script("hunter2")
    assert "update-grub" in install_grub_password(digest)

    def bootloader(seen: core.Observed, wanted: core.Desired = WS) -> list[str]:
        return [f.subject for f in core.compare(wanted, seen)
                if f.check == "screen_lock.bootloader_password"]

    no_grub = observed("applied_ws1.out")
    assert bootloader(no_grub) == []
    text = (DATA / "applied_ws1.out").read_text(encoding="utf-8").replace(
        "==> grub\nabsent\n", "==> grub\npresent\n")
    with_grub = observed("", text)
    assert with_grub.grub_present and core.skipped(WS, with_grub) == {}
    assert bootloader(with_grub) == ["/boot/grub/grub.cfg"]
    off = want({"workstations"}, load_text("screen_lock: {bootloader_password: false}"))
    assert bootloader(with_grub, off) == []
    assert core.skipped(off, with_grub) == {
        "screen_lock.bootloader_password": "policy: screen_lock.bootloader_password is false"}
    text = text.replace("==> grub\npresent\n", "==> grub\npresent\nset superusers=\"root\"\n"
                        f"password_pbkdf2 root {digest}\n")
    assert bootloader(observed("", text)) == []
