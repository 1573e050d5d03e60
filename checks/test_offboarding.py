"""R-OFF 离职帐号冻结与注销, R-RET: every user this host's records say is frozen is shut out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from baomi import offboarding as core
from baomi.checks.conftest import observe
from baomi.findings import report


@pytest.mark.clause("R-OFF")
def test_offboarded_users_are_shut_out(host: Any) -> None:
    records = core.parse_records(core.sections_out(observe(host, core.records_script()),
                                                   "records"))
    today = datetime.now(UTC).date()
    findings = []
    for user, record in sorted(records.items()):
        facts = core.parse(user, observe(host, core.observe_script(user)))
        present: tuple[str, ...] = ()
        if facts.account is not None:
            paths = core.keys_paths(facts.keys_files, facts.account)
            present = core.parse_present(observe(host, core.present_script(paths)))
        findings += core.compare(record, facts, present, today)
    assert not findings, report(findings)
