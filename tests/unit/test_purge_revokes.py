"""A purged user's account requests are revoked, so `baomi account apply` never recreates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from baomi.controller.commands import offboard
from baomi.controls import accounts
from baomi.records import append_jsonl


def test_a_deleted_users_requests_are_revoked_with_the_freeze_ticket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAOMI_STATE_DIR", str(tmp_path))
    for user in ("alice", "bob"):
        append_jsonl(accounts.requests_path(), [accounts.Request(
            user, "head.sales", "vp.ops", "2026-10-01T09:00:00Z", ticket="REQ-1").as_dict()])
    offboard.append([{"time": "2026-10-02T09:00:00Z", "action": "freeze", "user": "alice",
                      "host": "srv1", "state": "frozen", "ticket": "HR-7"}])
    offboard._revoke_requests([
        {"state": "deleted", "user": "alice", "host": "srv1"},
        {"state": "refused", "user": "bob", "host": "srv1"},
    ], operator="hr.li")
    assert [r.user for r in accounts.load_requests()] == ["bob"]
    revocations = [line for line in accounts.requests_path().read_text().splitlines()
                   if '"revoke"' in line]
    assert len(revocations) == 1 and '"HR-7"' in revocations[0] and '"hr.li"' in revocations[0]
