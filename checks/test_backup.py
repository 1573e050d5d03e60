"""R-BAK 每周二次备份: schedule, freshness, continuity, restic check and a sample restore.

One observation per host (it restores a sample of files, so it is not repeated per test);
each test asserts one part of R-BAK and records its evidence (snapshot ids, dates, sample).
"""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import backup as core
from baomi.findings import report
from baomi.policy import Policy

_SEEN: dict[str, core.Observed] = {}


def _check(host: Any, policy: Policy, groups: set[str], part: str,
           record_property: Any) -> None:
    name = host.backend.hostname
    want = core.desired(policy, groups, name)
    reasons = core.skipped(want)
    if reasons:
        pytest.skip("; ".join(reasons))
    if name not in _SEEN:
        _SEEN[name] = core.parse(observe(host, core.observe_script()))
    seen = _SEEN[name]
    shown = core.evidence(want, seen)[part]
    record_property("evidence", shown)
    print(f"{name} {part}: {shown}")
    findings = [f for f in core.compare(want, seen) if f.details.get("check") == part]
    assert not findings, report(findings)


@pytest.mark.clause("R-BAK")
def test_backup_setup(host: Any, policy: Policy, groups: set[str], record_property: Any) -> None:
    _check(host, policy, groups, "setup", record_property)


@pytest.mark.clause("R-BAK")
def test_backup_schedule(host: Any, policy: Policy, groups: set[str],
                         record_property: Any) -> None:
    _check(host, policy, groups, "schedule", record_property)


@pytest.mark.clause("R-BAK")
def test_backup_fresh(host: Any, policy: Policy, groups: set[str], record_property: Any) -> None:
    _check(host, policy, groups, "freshness", record_property)


@pytest.mark.clause("R-BAK")
def test_backup_continuity(host: Any, policy: Policy, groups: set[str],
                           record_property: Any) -> None:
    _check(host, policy, groups, "continuity", record_property)


@pytest.mark.clause("R-BAK")
def test_backup_repository_check(host: Any, policy: Policy, groups: set[str],
                                 record_property: Any) -> None:
    _check(host, policy, groups, "repository", record_property)


@pytest.mark.clause("R-BAK")
def test_backup_restore(host: Any, policy: Policy, groups: set[str],
                        record_property: Any) -> None:
    _check(host, policy, groups, "restore", record_property)
