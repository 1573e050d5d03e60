"""R-SEC 防火墙: nftables default-deny inbound except SSH and the allowed services."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import firewall as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-SEC")
def test_firewall(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare(core.desired(policy, groups), seen)
    assert not findings, report(findings)
