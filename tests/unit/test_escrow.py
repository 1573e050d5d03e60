"""The escrow store on a real directory: encrypted at rest, 0600, retrievals recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from baomi.controller.escrow import EscrowError, EscrowStore


def test_put_retrieve_and_evidence(tmp_path: Path) -> None:
    store = EscrowStore(tmp_path / "escrow")
    store.put("luks-recovery", "vm1", "/dev/vdb", "correct horse battery", {"luks_uuid": "u1"})
    store.put("luks-recovery", "vm1", "/dev/vdb", "rotated secret", {"luks_uuid": "u1"})
    raw = (tmp_path / "escrow" / "entries.jsonl").read_text()
    assert "correct horse" not in raw and "rotated" not in raw
    for name in ("escrow.key", "entries.jsonl"):
        assert (tmp_path / "escrow" / name).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "escrow").stat().st_mode & 0o777 == 0o700
    assert store.retrievals() == []
    entry = store.retrieve("luks-recovery", "vm1", "/dev/vdb", reason="disk moved")
    assert entry.secret == "rotated secret"
    assert entry.meta == {"luks_uuid": "u1"}
    (record,) = store.retrievals()
    assert record["reason"] == "disk moved"
    assert record["entry"] == entry.id
    assert [e["subject"] for e in store.entries()] == ["/dev/vdb", "/dev/vdb"]
    assert all("token" not in e for e in store.entries())


def test_clear_errors(tmp_path: Path) -> None:
    store = EscrowStore(tmp_path / "none")
    with pytest.raises(EscrowError, match="no luks-recovery escrowed for vm1 /dev/vdc"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdc", reason="x")
    store.put("luks-recovery", "vm1", "/dev/vdb", "s")
    os.chmod(tmp_path / "none" / "escrow.key", 0o644)
    with pytest.raises(EscrowError, match="mode 0644; it must be 0600"):
        store.peek("luks-recovery", "vm1", "/dev/vdb")
    os.chmod(tmp_path / "none" / "escrow.key", 0o600)
    (tmp_path / "none" / "escrow.key").write_bytes(b"A" * 43 + b"=")
    with pytest.raises(EscrowError, match="cannot be decrypted"):
        store.peek("luks-recovery", "vm1", "/dev/vdb")
