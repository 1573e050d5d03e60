"""R-LOCK 开机与屏保密码: idle lock that users cannot override, TMOUT, sshd idle probes."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import screen_lock as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-LOCK")
def test_screen_lock(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare(core.desired(policy, groups), seen)
    assert not findings, report(findings)


@pytest.mark.clause("R-LOCK")
def test_bootloader_password(host: Any, policy: Policy) -> None:
    if not policy.screen_lock.bootloader_password:
        pytest.skip("policy: screen_lock.bootloader_password is false")
    seen = core.parse(observe(host, core.observe_script()))
    reasons = core.skipped(seen)
    if reasons:
        pytest.skip("; ".join(reasons))
    findings = core.compare_bootloader(seen)
    assert not findings, report(findings)
