"""kernel, core_dumps, login_defaults and the ssh/usb additions: pure logic on output captured
from lab host srv1 (tests/unit/data/<control>/, before and after `baomi apply`), the sysctl
reading order, the policy's validation, and the fix scripts run on copies of captured files."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from baomi import sysctl
from baomi.controls import core_dumps, kernel, login_defaults, ssh
from baomi.controls.contract import HostContext, evaluate
from baomi.fixes.login_defaults import pam_hash_script, pam_umask_script
from baomi.fixes.sysctl import disable_lines
from baomi.observe import sections
from baomi.policy import PolicyError, load_text
from baomi.pwquality import COMMON_PASSWORD

DATA = Path(__file__).parent / "data"
POLICY = load_text("")


def want(control: object, policy_text: str = "") -> object:
    policy = load_text(policy_text) if policy_text else POLICY
    return control.desired(HostContext.of(policy, {"servers"}, "srv1"))  # type: ignore[attr-defined]


def seen(control: object, name: str, w: object) -> object:
    text = (DATA / control.__name__.rsplit(".", 1)[1] / name).read_text(encoding="utf-8")  # type: ignore[attr-defined]
    return control.parse(text, w)  # type: ignore[attr-defined]


def test_sysctl_reading_order_names_what_is_read_after_ours() -> None:
    ours = kernel.SYSCTL_FILE
    settings = (
        sysctl.FileSetting("/usr/lib/sysctl.d/99-protect-links.conf", 7, "fs.protected_fifos",
                           "1"),  # read before ours (99-p < 99-z): harmless
        sysctl.FileSetting("/etc/sysctl.conf", 69, "kernel.kptr_restrict", "0"),  # read last
        sysctl.FileSetting("/etc/sysctl.d/99-zzz-local.conf", 1, "kernel.kptr_restrict", "1"),
        sysctl.FileSetting("/usr/lib/sysctl.d/99-zzz-local.conf", 1, "kernel.kptr_restrict",
                           "0"),  # hidden by the /etc file of the same name
        sysctl.FileSetting("/etc/sysctl.conf", 70, "kernel.dmesg_restrict", "1"),  # same value
    )
    assert sysctl.overriding(ours, settings, "fs.protected_fifos", "2") == []
    found = sysctl.overriding(ours, settings, "kernel.kptr_restrict", "2")
    assert [(s.path, s.line) for s in found] == [("/etc/sysctl.conf", 69),
                                                 ("/etc/sysctl.d/99-zzz-local.conf", 1)]
    assert sysctl.overriding(ours, settings, "kernel.dmesg_restrict", "1") == []
    assert disable_lines([("/etc/sysctl.conf", 69), ("/usr/lib/sysctl.d/x.conf", 1)], "R-SEC") \
        == "sed -i '69s/^/# disabled by baomi (R-SEC): /' /etc/sysctl.conf"


def test_kernel_fresh_applied_and_own_kernel() -> None:
    w = want(kernel)
    fresh = kernel.compare(w, seen(kernel, "fresh_srv1.out", w))
    checks = {f.check for f in fresh}
    assert checks == {"kernel.sysctl_file", "kernel.protocols_file", "kernel.protocols_refused"}
    assert {f.subject for f in fresh if f.check == "kernel.protocols_refused"} == \
        {f"modprobe -n -v {p}" for p in ("dccp", "sctp", "rds", "tipc")}
    applied = seen(kernel, "applied_srv1.out", w)
    assert not applied.sysctl.own_kernel and kernel.compare(w, applied) == []
    result = evaluate(kernel.CONTROL, "srv1", w, applied)
    assert result.not_applicable["kernel.sysctl_live"] == sysctl.SHARED_KERNEL
    # The same output from a host with its own kernel: the lab machine's values are named.
    own = replace(applied, sysctl=replace(applied.sysctl, own_kernel=True))
    live = {f.subject: f.found for f in kernel.compare(w, own) if f.check == "kernel.sysctl_live"}
    assert live["live fs.protected_symlinks"] == "0"
    assert live["live kernel.yama.ptrace_scope"] == "not in this kernel"


def test_core_dumps_limits_and_coredump() -> None:
    w = want(core_dumps)
    assert "*\thard\tcore\t0\nroot\thard\tcore\t0\n" in w.limits_conf
    fresh = core_dumps.compare(w, seen(core_dumps, "fresh_srv1.out", w))
    assert {f.check for f in fresh} == {"core_dumps.sysctl_file", "core_dumps.limits"}
    applied = seen(core_dumps, "applied_srv1.out", w)
    assert core_dumps.compare(w, applied) == []
    raising = replace(applied, raising=("/etc/security/limits.conf:60: @dev hard core unlimited",),
                      coredump=True)
    out = [str(f) for f in core_dumps.compare(w, raising)]
    assert "[R-ACL 最小权限, R-DST 彻底销毁] /etc/security/limits.conf:60: expected no hard core " \
           "limit above 0, found @dev hard core unlimited" in out
    assert any("/etc/systemd/coredump.conf.d/baomi.conf: expected baomi's content, found "
               "missing" in f for f in out)
    assert core_dumps.skipped(w, applied)["core_dumps.systemd_coredump"] == \
        "systemd-coredump is not installed on this host"
    limits = ("\n==> limits\n/etc/security/limits.conf:60:@dev hard core unlimited\n"
              f"{core_dumps.LIMITS_FILE}:2:*\thard\tcore\t0\n/etc/x.conf:1:* soft core 1000\n"
              "<== limits rc=0\n")
    assert core_dumps.parse(limits, w).raising == (
        "/etc/security/limits.conf:60: @dev hard core unlimited",)


def _run_on_copy(script: str, path: str, content: str, tmp: Path) -> str:
    copy = tmp / Path(path).name
    copy.write_text(content, encoding="utf-8")
    subprocess.run(["sh", "-c", script.replace(path, str(copy))], check=True)
    return copy.read_text(encoding="utf-8")


def test_login_defaults_fixes_on_copies(tmp_path: Path) -> None:
    w = want(login_defaults)
    fresh = seen(login_defaults, "fresh_srv1.out", w)
    found = {(f.check, f.subject) for f in login_defaults.compare(w, fresh)}
    assert ("login_defaults.umask", "/etc/login.defs UMASK") in found
    assert ("login_defaults.hash_defaults", "/etc/login.defs ENCRYPT_METHOD") in found
    password = fresh.password or ""
    fixed = _run_on_copy(pam_hash_script(w, fresh), COMMON_PASSWORD, password, tmp_path)
    line = login_defaults.unix_line(fixed)
    assert line is not None and login_defaults.pam_hash_problem(w, line) is None
    assert "pam_unix.so obscure use_authtok try_first_pass yescrypt rounds=8" in fixed
    # SHA512 from the policy: the method word and rounds are rewritten on the same line.
    sha = want(login_defaults, "login_defaults: {hash_method: SHA512}")
    resha = _run_on_copy(pam_hash_script(sha, replace(fresh, password=fixed)), COMMON_PASSWORD,
                         fixed, tmp_path)
    assert "try_first_pass sha512 rounds=65536" in resha and "yescrypt" not in resha.split(
        "pam_unix.so", 1)[1].splitlines()[0]
    session = "/etc/pam.d/common-session"
    text = (fresh.sessions[session] or "") + "session optional pam_umask.so umask=0022\n"
    script = pam_umask_script(replace(fresh, sessions={session: text}))
    assert "pam_umask.so umask=" not in _run_on_copy(script, session, text, tmp_path)
    plain = _run_on_copy(pam_umask_script(replace(fresh, sessions={session: fresh.sessions[
        session]})), session, fresh.sessions[session] or "", tmp_path)
    assert plain.endswith(login_defaults.PAM_UMASK_LINE + "\n")
    assert login_defaults.compare(w, seen(login_defaults, "applied_srv1.out", w)) == []


def test_ssh_forwarding_groups_get_their_own_match_block() -> None:
    w = want(ssh, "ssh: {forwarding_groups: [devops]}")
    assert w.dropin.endswith("Match Group devops\n    AllowTcpForwarding yes\n"
                             "    AllowAgentForwarding yes\n")
    assert "X11Forwarding no\n" in w.dropin and "LogLevel VERBOSE\n" in w.dropin
    ours = ssh.MatchContext(f"{ssh.DROPIN}:20", "user=alice,host=x,addr=1.2.3.4",
                            {"allowtcpforwarding": "yes", "allowagentforwarding": "yes"})
    theirs = replace(ours, where="/etc/ssh/sshd_config:130")
    applied = ssh.parse((DATA / "ssh" / "applied_srv1.out").read_text(encoding="utf-8"))
    assert ssh.match_findings(w, replace(applied, contexts=(ours,))) == []
    named = {f.subject for f in ssh.match_findings(w, replace(applied, contexts=(theirs,)))}
    assert "sshd AllowTcpForwarding in the Match block at /etc/ssh/sshd_config:130" in named


@pytest.mark.parametrize(("text", "problem"), [
    ("login_defaults: {umask: '022'}", "login_defaults.umask: umask 022 leaves new files "
                                       "readable or writable by everyone"),
    ("kernel:\n  sysctl: {'Kernel..x': 1}\n", "kernel.sysctl: 'Kernel..x' is not a sysctl key"),
    ("kernel:\n  sysctl: {kernel.kptr_restrict: high}\n", "kernel.sysctl.kernel.kptr_restrict: "
                                                          "high is not a number"),
    ("kernel: {refuse_protocols: [sctp, ipv6]}", "kernel.refuse_protocols[1]: 'ipv6' is not "
                                                 "allowed"),
    ("usb: {refuse_buses: [firewire, pcie]}", "usb.refuse_buses[1]: 'pcie' is not allowed"),
    ("ssh: {banner: 'a\\\\nb'}", "ssh.banner: the banner has a backslash"),
    ("ssh: {host_key_algorithms: [ecdsa-sha2-nistp256]}",
     "ssh.host_key_algorithms[0]: 'ecdsa-sha2-nistp256' is not allowed"),
])
def test_bad_settings_are_named_with_their_place(text: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, "p.yaml")
    assert problem in str(caught.value), str(caught.value)


def test_sections_of_captures_are_complete() -> None:
    for control, names in ((kernel, ("sysctl_file", "kernel", "live", "settings")),
                           (core_dumps, ("limits", "coredump")),
                           (login_defaults, ("login_defs", "password", "session0"))):
        name = control.__name__.rsplit(".", 1)[1]
        captured = sections((DATA / name / "applied_srv1.out").read_text(encoding="utf-8"))
        assert set(names) <= set(captured), name
