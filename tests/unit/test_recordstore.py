"""The system of record's pure parts: the local store, the policy's choice, the chain check,
the API's validation of records, import uids. (The collector itself: tests/collector/
test_records.py, real processes.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from baomi.collector import auditlog, records_api
from baomi.collector.validate import Invalid
from baomi.controller.records_remote import import_uid
from baomi.records import RecordError
from baomi.recordstore import (
    ACCOUNTS,
    ESCROW,
    LEDGER,
    RETRIEVALS,
    LocalStore,
    Retrieval,
    digest,
    where_configured,
)


def chain(n: int) -> list[dict[str, Any]]:
    lines, prev = [], auditlog.GENESIS
    for seq in range(1, n + 1):
        line = {"seq": seq, "at": f"2026-12-02T10:00:0{seq}+00:00", "actor": "ann", "role": "it",
                "action": "login", "detail": "{}", "prev": prev}
        line["hash"] = auditlog.line_hash(prev, seq, line["at"], "ann", "it", "login", "{}")
        lines.append(line)
        prev = line["hash"]
    return lines


def test_an_intact_chain_verifies_and_gives_its_head() -> None:
    lines = chain(4)
    count, head, problems = auditlog.verify(lines)
    assert (count, head, problems) == (4, lines[-1]["hash"], [])
    assert auditlog.verify(lines, head=(4, head))[2] == []


def test_an_edit_a_deletion_and_a_cut_tail_are_named() -> None:
    edited = chain(4)
    edited[1]["actor"] = "mallory"
    assert auditlog.verify(edited)[2] == [
        "line 2: its content does not match its hash (edited: login by mallory at "
        "2026-12-02T10:00:02+00:00)"]
    gap = chain(4)
    del gap[1]
    problems = auditlog.verify(gap)[2]
    assert "line 3: expected line 2 here (lines 2..2 deleted?)" in problems
    assert any("prev does not match" in p for p in problems)
    full = chain(4)
    noted = (4, full[-1]["hash"])
    assert auditlog.verify(full[:3], head=noted)[2] == [
        "the head noted earlier (line 4) is missing (deleted)"]


def test_records_are_checked_against_their_log_line() -> None:
    lines = chain(2)
    detail = json.dumps({"stream": "offboarding", "uid": "u1", "digest": "d" * 64})
    lines[1]["detail"] = detail
    lines[1]["hash"] = auditlog.line_hash(lines[0]["hash"], 2, lines[1]["at"], "ann", "it",
                                          "login", detail)
    assert auditlog.verify(lines, [("offboarding", "u1", 2, "d" * 64)])[2] == []
    assert auditlog.verify(lines, [("offboarding", "u1", 2, "e" * 64)])[2] == [
        "record offboarding/u1: differs from what log line 2 recorded (the record or the line "
        "was changed)"]
    assert auditlog.verify(lines, [("offboarding", "u2", 3, "d" * 64)])[2] == [
        "record offboarding/u2: its log line 3 is missing (deleted)"]


def test_a_head_must_be_what_verify_log_printed() -> None:
    assert auditlog.parse_head("12:" + "a" * 64) == (12, "a" * 64)
    for bad in ("12", "x:" + "a" * 64, "3:" + "A" * 64, "3:abc"):
        with pytest.raises(ValueError, match="--head"):
            auditlog.parse_head(bad)


def test_local_store_keeps_todays_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "state", tmp_path / "escrow")
    assert store.path(LEDGER) == tmp_path / "state" / "offboarding" / "ledger.jsonl"
    assert store.path(ACCOUNTS) == tmp_path / "state" / "accounts" / "requests.jsonl"
    assert store.path(ESCROW) == tmp_path / "escrow" / "entries.jsonl"
    store.append(LEDGER, [{"user": "a"}])
    assert store.read(LEDGER) == [{"user": "a"}]
    assert store.path(LEDGER).stat().st_mode & 0o777 == 0o600
    assert store.recipient() is None
    store.set_recipient("BAOMI-ESCROW-RECIPIENT-1 QUJD")
    assert store.recipient() == "BAOMI-ESCROW-RECIPIENT-1 QUJD"
    with pytest.raises(RecordError, match="already has a key pair"):
        store.set_recipient("BAOMI-ESCROW-RECIPIENT-1 WFla")


def test_local_escrow_retrieval_is_recorded_before_the_entry_is_given(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "state", tmp_path / "escrow")
    r = Retrieval("luks-recovery", "vm1", "/dev/vdb", "disk failure", {"operator": "bob"})
    with pytest.raises(RecordError, match="no luks-recovery escrowed for vm1 /dev/vdb"):
        store.open_escrow(r)
    assert store.read(RETRIEVALS) == []  # nothing to give, nothing recorded
    store.append(ESCROW, [{"id": "1", "kind": "luks-recovery", "host": "vm1",
                           "subject": "/dev/vdb", "sealed": "old"},
                          {"id": "2", "kind": "luks-recovery", "host": "vm1",
                           "subject": "/dev/vdb", "sealed": "new"}])
    assert store.open_escrow(r)["sealed"] == "new"
    (recorded,) = store.read(RETRIEVALS)
    assert (recorded["entry"], recorded["operator"], recorded["reason"]) == (
        "2", "bob", "disk failure")


def test_the_policy_says_where_records_live(tmp_path: Path) -> None:
    assert where_configured(str(tmp_path / "absent.yaml")) == "local"
    policy = tmp_path / "policy.yaml"
    policy.write_text("collector:\n  records: collector\n")
    assert where_configured(str(policy)) == "collector"
    policy.write_text("collector:\n  records: remote\n")
    with pytest.raises(RecordError, match="policy does not load"):
        where_configured(str(policy))


def test_the_api_refuses_bad_records_with_one_line() -> None:
    entry = {"id": "e", "kind": "k", "host": "h", "subject": "s", "created": "c",
             "recipient": "r", "sealed": "x"}
    assert records_api.parse_batch(ESCROW, {"records": [{"uid": "e", "record": entry}]}) == [
        ("e", entry)]
    for body, message in (
            ({"records": []}, "1 to 500 records"),
            ({"records": [{"uid": "a/b", "record": {}}]}, "records[0].uid"),
            ({"records": [{"uid": "a", "record": [1]}]}, "records[0].record: expected a JSON"),
            ({"records": [{"uid": "a", "record": dict(entry, sealed="")}]}, "needs sealed"),
            ({"records": [{"uid": "a", "record": {"x": "y" * 70_000}}]}, "larger than")):
        stream = ESCROW if "sealed" in message else LEDGER
        with pytest.raises(Invalid, match=message.replace("[", r"\[").replace("]", r"\]")):
            records_api.parse_batch(stream, body)


def test_import_uids_follow_place_and_content() -> None:
    record = {"user": "a", "host": "srv1"}
    assert import_uid(LEDGER, 1, record) == import_uid(LEDGER, 1, dict(record))
    assert import_uid(LEDGER, 1, record) != import_uid(LEDGER, 2, record)
    assert import_uid(LEDGER, 1, record) != import_uid(LEDGER, 1, {**record, "host": "srv2"})
    assert import_uid(ESCROW, 7, {"id": "abc"}) == "abc"
    assert records_api.UID.fullmatch(import_uid(LEDGER, 123, record))
    assert digest({"b": 1, "a": "é"}) == digest({"a": "é", "b": 1})


def test_an_entry_other_than_the_one_asked_for_is_not_opened(tmp_path: Path) -> None:
    """A store answering a retrieval with another host's entry (a bug, a swapped row): the
    controller refuses to open it rather than show it under the wrong name."""
    from baomi.controller.escrow import EscrowError, EscrowStore

    class Swapping(LocalStore):
        def open_escrow(self, retrieval: Retrieval) -> dict[str, Any]:
            entry = super().open_escrow(retrieval)
            return {**entry, "host": "srv9"}

    folder = tmp_path / "escrow"
    store = EscrowStore(folder, Swapping(tmp_path / "state", folder))
    identity = tmp_path / "id"
    store.keygen(identity)
    store.put("luks-recovery", "vm1", "/dev/vdb", "s3cret")
    with pytest.raises(EscrowError, match=r"answered with entry .* for srv9 /dev/vdb, not the "
                                          r"one asked for"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdb", "test", identity)


def test_an_old_fernet_store_is_not_imported(tmp_path: Path) -> None:
    from baomi.controller.records_remote import import_local

    local = LocalStore(tmp_path / "state", tmp_path / "escrow")
    local.escrow.mkdir()
    (local.escrow / "escrow.key").write_text("x")
    with pytest.raises(RecordError, match="old \\(Fernet\\) escrow store: run baomi escrow "
                                          "migrate"):
        import_local(local, None, print)  # type: ignore[arg-type]  # refused before any call


def test_a_key_pair_the_store_refuses_leaves_no_private_half(tmp_path: Path) -> None:
    from baomi.controller.escrow import EscrowError, EscrowStore

    class Refusing(LocalStore):
        def set_recipient(self, line: str) -> None:
            raise RecordError("col1: ann (role auditor) may not PUT /api/v1/escrow/recipient")

    store = EscrowStore(tmp_path / "escrow", Refusing(tmp_path / "state", tmp_path / "escrow"))
    with pytest.raises(EscrowError, match=r"may not PUT .*; no key pair made"):
        store.keygen(tmp_path / "identity")
    assert not (tmp_path / "identity").exists()
