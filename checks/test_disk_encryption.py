"""R-ENC 加密存储: sensitive data on open LUKS mappings, the policy's volumes as LUKS2, and the
root filesystem of the groups in ``require_root_on`` encrypted.

A failure shows the evidence: path → mount → device chain (from findmnt -J, lsblk -J and
cryptsetup status).  The root filesystem is its own test, so a fleet whose workstations
cannot have an encrypted root yet (containers, older installs) shows exactly that finding.
"""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import disk_encryption as core
from baomi.findings import report
from baomi.policy import Policy


def _seen(host: Any, want: core.Desired) -> core.Observed:
    return core.parse(observe(host, core.observe_script(want)), want)


@pytest.mark.clause("R-ENC")
def test_disk_encryption(host: Any, policy: Policy, groups: set[str]) -> None:
    want = core.desired(policy, groups)
    findings = core.compare(want, _seen(host, want))
    assert not findings, report(findings)


@pytest.mark.clause("R-ENC")
def test_root_filesystem_encrypted(host: Any, policy: Policy, groups: set[str]) -> None:
    want = core.desired(policy, groups)
    findings = core.compare_root(want, _seen(host, want))
    assert not findings, report(findings)
