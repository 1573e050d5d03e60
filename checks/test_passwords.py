"""R-PWD 密码策略: pam_pwquality length and classes, login.defs ageing, human accounts aged.

The observe script reads /etc/shadow on the host and prints only names, a password status and
the ageing fields: no password hash reaches the controller or this report.
"""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import passwords as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-PWD")
def test_passwords(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare(core.desired(policy, groups), seen)
    assert not findings, report(findings)
