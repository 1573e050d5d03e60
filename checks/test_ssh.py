"""R-TLS 加密传输: sshd takes keys only, root at most by key, approved ciphers/MACs/KEX."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import ssh as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-TLS")
def test_ssh(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare(core.desired(policy, groups), seen)
    assert not findings, report(findings)
