"""audit_rules' parser and compare on output captured from real hosts.

Lab hosts (fresh_srv1, applied_srv1, edited_srv1: plain host in a PID namespace, auditctl gets
EPERM; applied_srv2_nspawn: systemd-nspawn host, no audit netlink at all) and this machine's
initial PID namespace with Debian's auditctl (kernel_loaded_machine: the rules generated for
tests/unit/data/audit_rules/policy.yaml loaded with ``auditctl -R``; kernel_drifted_machine: one
watch removed with ``auditctl -W`` and a stale baomi-keyed watch added).
"""

from __future__ import annotations

from pathlib import Path

from baomi.controls import audit_rules as core
from baomi.controls.contract import HostContext, evaluate
from baomi.findings import Finding
from baomi.policy import Policy, load, load_text

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "audit_rules"
POLICY = load_text((ROOT / "policy.yaml").read_text(encoding="utf-8"))


def desired(policy: Policy, groups: set[str]) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, "srv1"))


SERVERS = desired(POLICY, {"servers"})
MACHINE = desired(load(str(DATA / "policy.yaml")), {"servers"})


def observed(name: str) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"), SERVERS)


def loaded(want: core.Desired, seen: core.Observed) -> list[Finding]:
    return [f for f in core.compare(want, seen) if f.check == core.LOADED.id]


def text(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def test_rules_cover_audited_levels_of_the_hosts_groups_only() -> None:
    assert SERVERS.content == core.HEADER + (
        "-w /srv/customers -p rwa -k baomi-confidential\n"
        "-w /srv/contracts -p rwa -k baomi-top-secret\n")
    # 秘密 has audit: false, so the workstation path needs no watch; backup hosts have none.
    assert desired(POLICY, {"workstations"}).content is None
    assert desired(POLICY, {"backup"}).content is None
    # 秘密 in the machine policy is not watched either.
    assert [w.path for w in MACHINE.watches] == ["/tmp/acl-audit/data/customers",
                                                  "/tmp/acl-audit/data/contracts"]


def test_policy_settings_reach_the_rules() -> None:
    text_ = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    changed = load_text(text_.replace("permissions: rwa", "permissions: aw").replace(
        "key_prefix: baomi", "key_prefix: cust"))
    assert desired(changed, {"servers"}).watches[0].rule == \
        "-w /srv/customers -p wa -k cust-confidential"  # auditctl's order: r w x a
    disabled = load_text(text_.replace("  enabled: true                              # watch",
                                       "  enabled: false                             # watch"))
    assert not disabled.audit_rules.enabled
    assert desired(disabled, {"servers"}).content is None


def test_fresh_lab_host_misses_the_file_and_cannot_ask_the_kernel() -> None:
    seen = observed("fresh_srv1.out")
    assert seen.file is None
    assert seen.loaded is None
    assert seen.augenrules
    assert text(core.compare(SERVERS, seen)) == (
        "[R-LOG 访问日志与操作审计] /etc/audit/rules.d/50-baomi.rules: expected 2 baomi watch "
        "rule(s), found missing")
    assert core.skipped(SERVERS, seen) == {
        "audit_rules.loaded": "kernel load not possible here: Error sending rule list data "
                              "request (Operation not permitted)"}
    result = evaluate(core.CONTROL, "srv1", SERVERS, seen)
    assert result.statuses() == {"audit_rules.file": "fail",
                                 "audit_rules.loaded": "not applicable"}


def test_applied_lab_hosts_pass_with_the_kernel_part_skipped() -> None:
    for name in ("applied_srv1.out", "applied_srv2_nspawn.out"):
        seen = observed(name)
        assert core.compare(SERVERS, seen) == [], name
        assert set(core.skipped(SERVERS, seen)) == {"audit_rules.loaded"}, name
    assert "Cannot open netlink audit socket" in core.skipped(
        SERVERS, observed("applied_srv2_nspawn.out"))["audit_rules.loaded"]


def test_edited_rules_file_names_missing_and_extra_rules() -> None:
    findings = core.compare(SERVERS, observed("edited_srv1.out"))
    assert [f.check for f in findings] == ["audit_rules.file"]
    found = text(findings)
    assert "expected exactly the baomi watch rules, found missing '-w /srv/contracts -p rwa -k " \
           "baomi-top-secret'; extra '-w /etc/shadow -p wa -k baomi-x'" in found


def test_rules_loaded_in_the_kernel_are_recognised() -> None:
    seen = observed("kernel_loaded_machine.out")
    assert seen.loaded == tuple(w.rule for w in MACHINE.watches)
    assert core.skipped(MACHINE, seen) == {}
    assert seen.enabled == "0"  # this machine runs no auditd: the finding says so
    assert [(f.check, f.subject, f.found) for f in core.compare(MACHINE, seen)] == [
        ("audit_rules.loaded", "kernel audit", "enabled 0")]
    enabled = core.Observed(seen.file, seen.loaded, None, "1", seen.augenrules)
    assert core.compare(MACHINE, enabled) == []


def test_kernel_drift_names_the_missing_and_the_stale_watch() -> None:
    seen = observed("kernel_drifted_machine.out")
    findings = loaded(MACHINE, seen)
    found = text(findings)
    assert "kernel audit watch /tmp/acl-audit/data/contracts: expected loaded '-w " \
           "/tmp/acl-audit/data/contracts -p rwa -k baomi-top-secret', found not loaded" in found
    assert "kernel audit rules: expected only the policy's baomi watches, found stale '-w " \
           "/tmp/acl-audit/data -p w -k baomi-old'" in found
    assert {f.severity for f in findings if "watch" in f.subject} == {"critical"}


def test_no_rules_answer_is_an_empty_list() -> None:
    out = "\n==> loaded\nNo rules\n<== loaded rc=0\n"
    assert core.parse(out, SERVERS).loaded == ()
