"""ssh (R-TLS): parser, compare and override detection on output captured from lab hosts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from baomi.controls import ssh as core
from baomi.controls.contract import HostContext
from baomi.findings import Finding
from baomi.fixes.ssh import neutralise_script
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "ssh"
POLICY = load_text("")
WANT = core.desired(HostContext.of(POLICY, {"servers"}))


def observed(name: str) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"))


def text(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def test_desired_comes_from_the_policy() -> None:
    assert WANT.sshd.values["Ciphers"] == ",".join(POLICY.ssh.ciphers)
    assert WANT.sshd.values["KexAlgorithms"] == ",".join(POLICY.ssh.kex)
    assert WANT.sshd.values["PermitRootLogin"] == POLICY.ssh.permit_root_login
    assert "PasswordAuthentication no\n" in WANT.dropin
    strict = core.desired(HostContext.of(
        load_text("ssh: {permit_root_login: 'no', macs: [hmac-sha2-512]}"), set()))
    assert "PermitRootLogin no\nCiphers" in strict.dropin
    assert "MACs hmac-sha2-512\n" in strict.dropin


def test_fresh_debian_sshd_is_reported_with_evidence() -> None:
    seen = observed("fresh_srv1.out")
    assert seen.dropin is None
    assert seen.include_line == 12
    assert seen.effective["passwordauthentication"] == "yes"
    found = text(core.compare(WANT, seen))
    assert "[R-TLS 加密传输] sshd PasswordAuthentication: expected no, found yes" in found
    assert "sshd Ciphers: expected chacha20-poly1305@openssh.com,aes256-gcm@openssh.com," \
           "aes128-gcm@openssh.com,aes256-ctr, found chacha20-poly1305@openssh.com,aes128-ctr" \
           in found
    assert "sshd KexAlgorithms: expected" in found and "sshd MACs: expected" in found
    # Debian's own setting sits after the Include: it does not override the drop-in.
    assert "KbdInteractiveAuthentication" not in found
    assert "40-baomi-ssh.conf: expected the baomi content, found missing" in found
    assert neutralise_script(seen, WANT) == ""


def test_applied_host_is_compliant() -> None:
    seen = observed("applied_srv1.out")
    assert seen.dropin == WANT.dropin
    assert seen.effective["permitrootlogin"] == "without-password"  # = prohibit-password
    assert core.compare(WANT, seen) == []


def test_an_earlier_dropin_wins_and_is_named_and_neutralised() -> None:
    seen = observed("override_srv2.out")
    findings = core.compare(WANT, seen)
    assert "sshd PasswordAuthentication: expected no, found yes (set earlier in " \
           "/etc/ssh/sshd_config.d/10-foo.conf:1 'PasswordAuthentication yes')" in text(findings)
    assert [f.severity for f in findings if f.subject == "sshd PasswordAuthentication"] == \
        ["critical"]
    script = neutralise_script(seen, WANT)
    assert "sed -i '1s/^/# disabled by baomi (R-TLS): /' /etc/ssh/sshd_config.d/10-foo.conf" \
        in script
    assert "sed -i '2s/^/# disabled by baomi (R-TLS): /' /etc/ssh/sshd_config.d/10-foo.conf" \
        in script
    assert "40-baomi-ssh.conf" not in script and "/etc/ssh/sshd_config " not in script


def test_an_invalid_config_is_one_critical_finding() -> None:
    findings = core.compare(WANT, observed("invalid_srv2.out"))
    assert text(findings) == ("[R-TLS 加密传输] sshd -T: expected a valid sshd configuration, "
                              "found /etc/ssh/sshd_config.d/20-bad.conf line 1: Bad SSH2 "
                              "cipher spec 'bogus-cipher'.")
    assert findings[0].severity == "critical"


def test_main_file_lines_before_the_include_override() -> None:
    seen = core.Observed(dropin=None, effective={}, sshd_error=None, include_line=12, settings=(
        core.Setting("/etc/ssh/sshd_config", 3, "PermitRootLogin", "yes"),
        core.Setting("/etc/ssh/sshd_config", 40, "PermitRootLogin", "no"),
        core.Setting("/etc/ssh/sshd_config.d/90-late.conf", 1, "PermitRootLogin", "yes"),
        core.Setting(core.DROPIN, 3, "PermitRootLogin", "prohibit-password")))
    assert [(s.path, s.line) for s in core.overriding(seen, "permitrootlogin")] == \
        [("/etc/ssh/sshd_config", 3)]


def test_effective_config_parser_is_shared_and_keeps_repeated_keywords() -> None:
    from baomi.sshd import parse_effective

    text = "Port 22\nlistenaddress [::]:22\nlistenaddress 0.0.0.0:22\nciphers a,b\n\n"
    assert parse_effective(text) == {"port": "22", "listenaddress": "[::]:22,0.0.0.0:22",
                                     "ciphers": "a,b"}


def test_a_match_block_that_allows_passwords_fails_and_one_not_evaluated_is_named() -> None:
    """match_address_srv1.out: srv1 after `baomi apply --only ssh`, then sshd_config ending
    with `Match Address 10.0.0.0/8` / `PasswordAuthentication yes` (line 123) and
    `Match Group staff,!wheel User bob*` / `PermitRootLogin yes` (line 125; staff is empty)."""
    seen = observed("match_address_srv1.out")
    assert seen.effective["passwordauthentication"] == "no"  # root from loopback: fine
    ctx = {c.where: c for c in seen.contexts}
    assert ctx["/etc/ssh/sshd_config:123"].spec == "user=root,host=client.invalid,addr=10.0.0.0"
    assert ctx["/etc/ssh/sshd_config:125"].values is None
    findings = core.compare(WANT, seen)
    lines = text(findings)
    assert ("sshd PasswordAuthentication in the Match block at /etc/ssh/sshd_config:123: "
            "expected no, found yes for user=root,host=client.invalid,addr=10.0.0.0") in lines
    assert ("sshd Match at /etc/ssh/sshd_config:125: expected every Match block evaluated, "
            "found not evaluated: no account is in group staff") in lines
    assert {f.check for f in findings} == {"ssh.password_authentication"}
    # The same host without the Match lines has no Match finding.
    assert not core.match_findings(WANT, replace(seen, contexts=()))
