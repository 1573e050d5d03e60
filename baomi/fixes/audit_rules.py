"""R-LOG fixes: load the rules file into the kernel (where the kernel answers at all)."""

from __future__ import annotations

import shlex

from baomi.controls.audit_rules import RULES_FILE


def load_command(augenrules: bool) -> str:
    """``augenrules --load`` merges rules.d as auditd does at boot; without it, the file alone."""
    return "augenrules --load" if augenrules else f"auditctl -R {shlex.quote(RULES_FILE)}"
