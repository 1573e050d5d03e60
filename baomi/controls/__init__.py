"""Which policy section serves which clause, and what enforces, verifies and watches it.

Each control is one policy section with the clause IDs it serves.  Its deploy module, check
module and agent rules are *discovered*, not declared: ``policy explain`` shows only what
exists in this installation, so a clause nothing serves yet is shown as unserved rather than
papered over.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from baomi.clauses import CLAUSES
from baomi.policy import Policy, as_dict


@dataclass(frozen=True)
class Control:
    """A policy section and the clauses it serves.  ``module`` names its deploy/check/agent."""

    section: str
    clauses: tuple[str, ...]
    summary: str
    module: str

    def deploy_module(self) -> str | None:
        return _existing(f"baomi.deploy.{self.module}")

    def check_module(self) -> str | None:
        return _existing(f"baomi.checks.test_{self.module}")

    def agent_rules(self) -> tuple[str, ...]:
        """Agent rules watching this control, from the agent's own registry when installed."""
        if importlib.util.find_spec("agent") is None:
            return ()
        try:
            rules = importlib.import_module("agent.rules")
        except ImportError:
            return ()
        table: dict[str, tuple[str, ...]] = getattr(rules, "RULES_BY_CONTROL", {})
        return table.get(self.section, ())


def _existing(module: str) -> str | None:
    try:
        return module if importlib.util.find_spec(module) is not None else None
    except (ImportError, ValueError):
        return None


CONTROLS: tuple[Control, ...] = (
    Control("levels", ("R-CLS",), "classification levels and their per-level protection",
            "levels"),
    Control("sensitive_paths", ("R-ACL", "R-CLS"),
            "owner, group, mode and level marking of directories holding customer data",
            "sensitive_paths"),
    Control("marking", ("R-CLS",), "how a path's level is marked on it", "sensitive_paths"),
    Control("disk_encryption", ("R-ENC",), "LUKS2 data volumes with escrowed recovery keys",
            "disk_encryption"),
    Control("usb", ("R-USB", "R-DEV"), "usb-storage refused, USBGuard allow-list", "usb"),
    Control("screen_lock", ("R-LOCK",),
            "GNOME idle lock, shell TMOUT, SSH idle, bootloader password", "screen_lock"),
    Control("passwords", ("R-PWD",), "pam_pwquality length/classes, password ageing",
            "passwords"),
    Control("ssh", ("R-TLS",), "sshd: keys only, approved ciphers, MACs and KEX", "ssh"),
    Control("backup", ("R-BAK",), "weekly encrypted restic backup, continuity, restore test",
            "backup"),
    Control("accounts", ("R-PRV",), "accounts only with a recorded request and approval",
            "accounts"),
    Control("offboarding", ("R-OFF", "R-RET"),
            "freeze at once, archive to custodian, delete at the end of the following month",
            "offboard"),
    Control("firewall", ("R-SEC",), "nftables default-deny inbound", "firewall"),
    Control("audit_rules", ("R-LOG",), "kernel audit rules on sensitive paths", "audit_rules"),
    Control("apps", ("R-APP", "R-DEV"),
            "deny-listed messaging apps and sync folders near customer data", "apps"),
    Control("destruction", ("R-DST",), "files past retention reported, destroyed with record",
            "destruction"),
    Control("agent", ("R-FIM", "R-LOG", "R-SEC"),
            "resident agent: baseline, real-time watch, drift to the collector", "agent"),
    Control("collector", ("R-INC", "R-LOG", "R-TLS"),
            "central record, TLS ingest, alerts on critical findings", "collector"),
    Control("reporting", ("R-AUD",), "audit reports per host and clause, with history",
            "reporting"),
)

BY_SECTION = {c.section: c for c in CONTROLS}


def _settings(policy: Policy, section: str) -> Any:
    return as_dict(getattr(policy, section))


def explain(policy: Policy) -> list[dict[str, Any]]:
    """One row per clause of the catalogue, in catalogue order; unserved clauses included."""
    rows = []
    for clause in CLAUSES.values():
        serving = [c for c in CONTROLS if clause.id in c.clauses]
        rows.append({
            "clause": clause.id,
            "title": clause.title,
            "summary": clause.summary,
            "controls": [
                {
                    "section": c.section,
                    "summary": c.summary,
                    "settings": _settings(policy, c.section),
                    "deploy": c.deploy_module(),
                    "check": c.check_module(),
                    "agent_rules": list(c.agent_rules()),
                }
                for c in serving
            ],
            "enforced": any(c.deploy_module() for c in serving),
            "verified": any(c.check_module() for c in serving),
            "watched": any(c.agent_rules() for c in serving),
        })
    return rows
