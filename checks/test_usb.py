"""R-USB 外部存储设备, R-DEV 禁存个人设备: usb-storage/uas refused, USBGuard allow-list in force."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import usb as core
from baomi.findings import report
from baomi.policy import Policy


@pytest.mark.clause("R-USB")
def test_usb_storage_refused(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare_modules(core.desired(policy, groups), seen)
    assert not findings, report(findings)


@pytest.mark.clause("R-USB")
@pytest.mark.clause("R-DEV")
def test_usbguard_allow_list(host: Any, policy: Policy, groups: set[str]) -> None:
    seen = core.parse(observe(host, core.observe_script()))
    findings = core.compare_usbguard(core.desired(policy, groups), seen)
    assert not findings, report(findings)
