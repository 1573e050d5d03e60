"""R-PRV 权限审批: every personal account on the host is covered by a recorded request."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import accounts as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-PRV")
def test_accounts_have_an_approved_request(host: Any, policy: Policy) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    want = core.desired(policy, core.load_requests(), host.backend.hostname)
    findings = core.compare(policy, want, seen)
    assert not findings, report(findings)
