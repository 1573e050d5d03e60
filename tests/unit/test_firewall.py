"""firewall (R-SEC): desired ruleset, `nft -j` parser, compare on output captured in the lab."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from baomi.controls import firewall as core
from baomi.controls.contract import HostContext, evaluate
from baomi.findings import Finding
from baomi.fixes.firewall import load_script
from baomi.policy import Policy, load_text

DATA = Path(__file__).parent / "data" / "firewall"
POLICY = load_text("")


def desired(policy: Policy, groups: set[str]) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, "srv1"))


WANT = desired(POLICY, {"servers"})
RICH = load_text("""
firewall:
  default_inbound: reject
  ssh_from: [10.213.0.0/16, 'fd00::/8']
  allow:
    - {port: 514, proto: udp, from: [10.0.0.0/8, 192.0.2.7, 'fd00::/8'], comment: syslog relay}
    - {port: 9100, proto: tcp, comment: node exporter}
""")


def observed(name: str) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"), WANT)


def ruleset_findings(want: core.Desired, seen: core.Observed) -> list[Finding]:
    """The findings a reload of the ruleset mends (the loaded table and its rules)."""
    return [f for f in core.compare(want, seen)
            if f.check in (core.LOADED.id, core.OPEN_PORTS.id, core.RULES.id)]


def text(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def test_default_policy_allows_only_ssh() -> None:
    assert WANT.services == (core.Service("tcp", POLICY.firewall.ssh_port),)
    assert WANT.rules[-1] == f"tcp dport {POLICY.firewall.ssh_port} accept"
    assert "policy drop;" in WANT.conf
    # Declare, delete, define: one nft -f transaction on a fresh host and on a re-run.
    assert "table inet baomi_filter\ndelete table inet baomi_filter\n" in WANT.conf
    assert "flush ruleset" not in WANT.conf
    # Installed only if nft -c accepts the new file alone, then loaded in one transaction.
    script = load_script(WANT.conf)
    assert "nft -c -f \"$new\"" in script and script.endswith("nft -f /etc/nftables.conf")


def test_collector_port_only_in_the_collector_group() -> None:
    port = POLICY.collector.listen_port
    assert core.Service("tcp", port) in desired(POLICY, {"collector"}).services
    assert core.Service("tcp", port) not in desired(POLICY, {"servers", "backup"}).services


def test_the_log_host_alone_lets_syslog_over_tls_in_once() -> None:
    logs = load_text("log_forwarding: {host: col1, port: 6514}\n"
                     "firewall: {allow: [{port: 6514, comment: syslog over TLS}]}\n")
    syslog = core.Service("tcp", 6514)
    on_col1 = core.desired(HostContext.of(logs, {"collector"}, "col1"))
    assert syslog in on_col1.services
    assert [r for r in on_col1.rules if "dport 6514" in r] == ["tcp dport 6514 accept"]
    assert "R-LOG log host" in on_col1.conf
    assert syslog not in core.desired(HostContext.of(
        load_text("log_forwarding: {host: col1}\n"), {"servers"}, "srv1")).services
    off = load_text("log_forwarding: {enabled: false, host: col1}\n")
    assert syslog not in core.desired(HostContext.of(off, {"collector"}, "col1")).services


def test_sources_split_by_family_and_hosts_lose_their_prefix() -> None:
    want = desired(RICH, {"collector"})
    assert want.rules[4:] == (
        "ip saddr 10.213.0.0/16 tcp dport 22 accept",
        "ip6 saddr fd00::/8 tcp dport 22 accept",
        f"tcp dport {RICH.collector.listen_port} accept",
        "ip saddr { 10.0.0.0/8, 192.0.2.7 } udp dport 514 accept",
        "ip6 saddr fd00::/8 udp dport 514 accept",
        "tcp dport 9100 accept",
        "reject with icmpx admin-prohibited",
    )
    assert "\t\t# syslog relay\n" in want.conf


def test_fresh_host_without_our_table() -> None:
    seen = observed("fresh_srv1.out")
    assert seen.nft_error is None and not seen.table
    assert text(core.compare(WANT, seen)) == (
        "[R-SEC 防火墙与入侵检测] table inet baomi_filter: expected loaded, default-deny "
        "inbound, found not loaded: nothing filters inbound connections\n"
        "[R-SEC 防火墙与入侵检测] /etc/nftables.conf: expected the baomi ruleset (loaded at "
        "boot), found edited content")
    result = evaluate(core.CONTROL, "srv1", WANT, seen)
    assert result.statuses() == {
        "firewall.loaded": "fail", "firewall.open_ports": "not applicable",
        "firewall.rules": "not applicable", "firewall.conf": "fail",
        "firewall.boot_service": "not applicable"}
    # Captured before the observe script read PID 1: the reason says it is unknown.
    assert result.not_applicable["firewall.boot_service"].startswith(
        "no init system on this host (PID 1 is unknown): nothing on it runs at boot")


def test_systemd_container_without_net_admin() -> None:
    seen = observed("fresh_srv2.out")
    assert seen.nft_error is not None and "Operation not permitted" in seen.nft_error
    assert seen.service == "disabled"
    found = core.compare(WANT, seen)
    assert (found[0].check, found[0].subject, found[0].severity) == (
        "firewall.loaded", "nftables ruleset", "critical")
    assert "nftables.service: expected enabled (loads the ruleset at boot), found disabled" \
        in text(found)


def test_applied_host_is_compliant() -> None:
    seen = observed("applied_srv1.out")
    assert (seen.hook, seen.policy) == ("input", "drop")
    assert [r.text for r in seen.rules] == list(WANT.rules)
    assert seen.accepted == (core.Service("tcp", 22),)
    assert seen.ssh_client == "10.213.7.1" and seen.sshd_ports == (22,)
    assert core.compare(WANT, seen) == []
    assert core.lockout_risk(WANT, seen) is None


def test_rich_ruleset_as_loaded_matches_its_policy() -> None:
    seen = observed("rich_srv1.out")
    want = desired(RICH, {"collector"})
    assert core.compare(want, seen) == []
    assert core.Service("udp", 514, ("10.0.0.0/8", "192.0.2.7")) in seen.accepted
    # The same host judged against the default policy: every extra port is named.
    found = text(ruleset_findings(WANT, seen))
    assert "inbound udp/514: expected dropped (the policy allows no such port), found " \
           "accepted from 10.0.0.0/8, 192.0.2.7 by rule 'ip saddr { 10.0.0.0/8, 192.0.2.7 } " \
           "udp dport 514 accept'" in found
    assert "inbound tcp/22: expected accepted only from anywhere, found accepted from " \
           "10.213.0.0/16" in found
    assert "rule in inet baomi_filter input: expected absent (not in the policy), found " \
           "'reject with icmpx admin-prohibited'" in found


def test_tampered_rules_are_named() -> None:
    found = core.compare(WANT, observed("tampered_srv1.out"))
    assert text(found) == (
        "[R-SEC 防火墙与入侵检测] rule in inet baomi_filter input: expected absent (not in the "
        "policy), found 'accept'\n"
        "[R-SEC 防火墙与入侵检测] inbound tcp/8080: expected dropped (the policy allows no "
        "such port), found accepted from anywhere by rule 'tcp dport 8080 accept'")
    assert {f.severity for f in found} == {"critical"}
    assert [f.check for f in found] == ["firewall.rules", "firewall.open_ports"]


def test_flushed_ruleset() -> None:
    found = ruleset_findings(WANT, observed("flushed_srv1.out"))
    assert [f.subject for f in found] == ["table inet baomi_filter"]


def test_lockout_guard() -> None:
    seen = observed("applied_srv1.out")
    far = desired(load_text("firewall: {ssh_from: [192.0.2.0/24]}"), set())
    assert core.lockout_risk(far, seen) == (
        "this SSH session comes from 10.213.7.1, outside firewall.ssh_from (192.0.2.0/24): "
        "the next login would be dropped")
    other_port = desired(load_text("firewall: {ssh_port: 2222}"), set())
    assert "sshd listens on 22" in (core.lockout_risk(other_port, seen) or "")


def test_disabled_firewall_is_not_enforced() -> None:
    off = desired(load_text("firewall: {enabled: false}"), set())
    seen = observed("fresh_srv1.out")
    assert core.compare(off, seen) == []
    assert core.not_applicable(off) == "policy: firewall.enabled is false"
    assert core.not_applicable(WANT) is None


def test_without_systemd_the_boot_step_is_named_honestly() -> None:
    """fresh_pid1_sshd_srv1.out: a plain lab host, whose PID 1 is sshd (no init at all): the
    boot check is not applicable and says why. The same host with another init as PID 1 (a
    sysvinit host) fails it: the ruleset would be lost at reboot."""
    seen = observed("fresh_pid1_sshd_srv1.out")
    assert (seen.service, seen.init) == ("no-systemd", "sshd")
    result = evaluate(core.CONTROL, "srv1", WANT, seen)
    assert result.not_applicable["firewall.boot_service"] == (
        "no init system on this host (PID 1 is sshd): nothing on it runs at boot, so no file "
        "of it can load the ruleset; whoever starts the host must load /etc/nftables.conf "
        "(baomi apply loads it now)")
    sysv = evaluate(core.CONTROL, "srv1", WANT, replace(seen, init="init"))
    assert sysv.statuses()["firewall.boot_service"] == "fail"
    assert "/etc/nftables.conf: expected loaded at boot, found PID 1 is init, not systemd: " \
        "baomi has no boot step for it" in text(sysv.findings)
