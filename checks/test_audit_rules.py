"""R-LOG 访问日志与操作审计: kernel audit watches on the sensitive paths whose level needs them."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import audit_rules as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-LOG")
def test_audit_rules_file(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare_file(core.desired(policy, groups), seen)
    assert not findings, report(findings)


@pytest.mark.clause("R-LOG")
def test_audit_rules_loaded(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    reasons = core.skipped(seen)
    if reasons:
        pytest.skip("; ".join(reasons))
    findings = core.compare_loaded(core.desired(policy, groups), seen)
    assert not findings, report(findings)
