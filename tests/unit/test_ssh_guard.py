"""R-SEC fail2ban against SSH guessing: the pure parts, on output captured from lab avx."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from baomi.controls import ssh_guard as core
from baomi.controls.contract import HostContext, evaluate
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "ssh_guard"


def _result(capture: str, policy: str = "", **change: object) -> list[str]:
    want = core.desired(HostContext.of(load_text(policy), ("servers",), "srv2"))
    seen = core.parse((DATA / capture).read_text(encoding="utf-8"), want)
    result = evaluate(core.CONTROL, "srv2", want, dataclasses.replace(seen, **change))
    return [f"{f.check} {f.subject}: {f.expected} / {f.found}" for f in result.findings]


def test_the_jail_holds_the_policy_values_and_never_bans_the_ignored() -> None:
    want = core.desired(HostContext.of(load_text(
        "ssh_guard: {max_retry: 3, find_time_minutes: 5, ban_minutes: 120, "
        "ignore: [192.0.2.7]}\n"), ("servers",), "srv2"))
    assert "maxretry = 3\nfindtime = 300\nbantime = 7200\n" in want.jail
    assert "ignoreip = 127.0.0.1/8 ::1 192.0.2.7/32\n" in want.jail
    assert "banaction = nftables-multiport\n" in want.jail


def test_the_running_jail_is_what_counts() -> None:
    assert _result("applied_srv2.out") == []
    # A later jail.local raising the ban's threshold: the running value is named.
    assert _result("applied_srv2.out", values={"maxretry": "50", "findtime": "600",
                                               "bantime": "3600"}) == \
        ["ssh_guard.jail sshd jail maxretry: 5 / 50"]
    assert _result("applied_srv2.out", service="enabled failed") == \
        ["ssh_guard.running systemctl fail2ban: enabled active / enabled failed"]
    assert _result("fresh_col1.out")[0] == \
        f"ssh_guard.config {core.JAIL_FILE}: baomi's jail / missing"


def test_a_host_without_systemd_says_why() -> None:
    want = core.desired(HostContext.of(load_text(""), ("servers",), "srv1"))
    seen = core.parse((DATA / "plain_srv1.out").read_text(encoding="utf-8"), want)
    result = evaluate(core.CONTROL, "srv1", want, seen)
    assert not result.findings
    assert result.not_applicable[core.RUNNING.id].startswith("no systemd on this host")
