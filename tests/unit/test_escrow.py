"""The escrow store on a real directory: sealed to an offline key, 0600, retrievals recorded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from baomi.controller.escrow import EscrowError, EscrowStore


def store_with_key(tmp_path: Path) -> tuple[EscrowStore, Path]:
    store = EscrowStore(tmp_path / "escrow")
    identity = tmp_path / "offline" / "escrow.identity"
    identity.parent.mkdir()
    store.keygen(identity)
    return store, identity


def test_the_controller_can_escrow_but_not_read(tmp_path: Path) -> None:
    store, identity = store_with_key(tmp_path)
    store.put("luks-recovery", "vm1", "/dev/vdb", "correct horse battery", {"luks_uuid": "u1"})
    store.put("luks-recovery", "vm1", "/dev/vdb", "rotated secret", {"luks_uuid": "u1"})
    # Everything the store directory holds (what a reader or a backup of it gets): no secret,
    # no private key.
    held = b"".join(p.read_bytes() for p in (tmp_path / "escrow").iterdir())
    assert b"correct horse" not in held and b"rotated" not in held
    assert identity.read_bytes().split()[1] not in held
    assert sorted(p.name for p in (tmp_path / "escrow").iterdir()) == ["entries.jsonl",
                                                                       "escrow.pub"]
    assert identity.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "escrow" / "entries.jsonl").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "escrow").stat().st_mode & 0o777 == 0o700
    assert not hasattr(store, "peek")
    latest = store.latest("luks-recovery", "vm1", "/dev/vdb")
    assert latest is not None and "sealed" not in latest
    assert latest["secret_sha256"] == hashlib.sha256(b"rotated secret").hexdigest()
    with pytest.raises(EscrowError, match="sealed to the escrow's offline key"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdb", reason="no key at hand")
    assert store.retrievals() == []


def test_retrieval_needs_the_identity_and_records_who(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store, identity = store_with_key(tmp_path)
    store.put("restic-password", "srv1", "sftp:backup@bak1:/srv/restic/srv1", "pw-1")
    monkeypatch.setenv("USER", "mallory")  # anyone sets $USER: never the operator on its own
    monkeypatch.setenv("SUDO_USER", "alice")
    entry = store.retrieve("restic-password", "srv1", "sftp:backup@bak1:/srv/restic/srv1",
                           reason="host rebuilt", identity=identity)
    assert entry.secret == "pw-1"
    monkeypatch.delenv("SUDO_USER")
    store.retrieve("restic-password", "srv1", "sftp:backup@bak1:/srv/restic/srv1",
                   reason="drill", identity=identity, operator="bob")
    first, second = store.retrievals()
    assert (first["operator"], first["operator_from"], first["sudo_user"], first["reason"]) \
        == ("alice", "SUDO_USER", "alice", "host rebuilt")
    assert (second["operator"], second["operator_from"], second["sudo_user"]) == \
        ("bob", "--operator", None)
    assert "mallory" not in json.dumps([first, second])
    assert first["entry"] == entry.id and isinstance(first["uid"], int)


def test_a_wrong_or_loose_identity_and_a_moved_entry_are_refused(tmp_path: Path) -> None:
    store, identity = store_with_key(tmp_path)
    store.put("luks-recovery", "vm1", "/dev/vdb", "s1")
    other = EscrowStore(tmp_path / "other")
    other_identity = tmp_path / "other.identity"
    other.keygen(other_identity)
    with pytest.raises(EscrowError, match=r"is not the identity entry .* is sealed to"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdb", reason="x", identity=other_identity)
    os.chmod(identity, 0o644)
    with pytest.raises(EscrowError, match="mode 0644; an identity must be 0600"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdb", reason="x", identity=identity)
    os.chmod(identity, 0o600)
    # A sealed secret copied onto another host's entry does not open (associated data).
    line = json.loads(store.entries_file.read_text())
    line["host"] = "vm2"
    with store.entries_file.open("a") as out:
        out.write(json.dumps(line) + "\n")
    with pytest.raises(EscrowError, match="does not open with"):
        store.retrieve("luks-recovery", "vm2", "/dev/vdb", reason="x", identity=identity)
    with pytest.raises(EscrowError, match="exists: not overwriting an identity"):
        EscrowStore(tmp_path / "third").keygen(identity)
    with pytest.raises(EscrowError, match="already has a key pair"):
        store.keygen(tmp_path / "new.identity")


def test_clear_errors(tmp_path: Path) -> None:
    store = EscrowStore(tmp_path / "none")
    with pytest.raises(EscrowError, match=r"no escrow public key \(escrow.pub\): run `baomi "
                                          r"escrow keygen --identity FILE` first"):
        store.put("luks-recovery", "vm1", "/dev/vdb", "s")
    store, identity = store_with_key(tmp_path)
    with pytest.raises(EscrowError, match="no luks-recovery escrowed for vm1 /dev/vdc"):
        store.retrieve("luks-recovery", "vm1", "/dev/vdc", reason="x", identity=identity)


def test_an_old_fernet_store_is_refused_then_migrated_once(tmp_path: Path) -> None:
    directory = tmp_path / "escrow"
    directory.mkdir(mode=0o700)
    key = Fernet.generate_key()
    (directory / "escrow.key").write_bytes(key)
    old = [{"id": f"e{i}", "kind": "luks-recovery", "host": "vm1", "subject": "/dev/vdb",
            "created": "2026-01-01T00:00:00+00:00", "meta": {"luks_uuid": "u"},
            "token": Fernet(key).encrypt(f"old-{i}".encode()).decode()} for i in (1, 2)]
    (directory / "entries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    store = EscrowStore(directory)
    for attempt in (lambda: store.entries(), lambda: store.put("k", "h", "s", "x")):
        with pytest.raises(EscrowError, match=r"old key kept beside them \(escrow.key\): run "
                                              r"`baomi escrow migrate --identity FILE`"):
            attempt()
    identity = tmp_path / "escrow.identity"
    assert store.migrate(identity) == 2
    assert sorted(p.name for p in directory.iterdir()) == ["entries.jsonl", "escrow.pub"]
    assert b"old-" not in (directory / "entries.jsonl").read_bytes()
    assert [e["id"] for e in store.entries()] == ["e1", "e2"]
    assert store.retrieve("luks-recovery", "vm1", "/dev/vdb", reason="after migration",
                          identity=identity).secret == "old-2"
    with pytest.raises(EscrowError, match="nothing to migrate"):
        store.migrate(tmp_path / "again.identity")


def test_escrow_commands_keygen_show_with_identity_list_without_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from baomi.cli import main

    monkeypatch.setenv("BAOMI_ESCROW_DIR", str(tmp_path / "escrow"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    runner = CliRunner()
    identity = tmp_path / "escrow.identity"
    made = runner.invoke(main, ["escrow", "keygen", "--identity", str(identity)])
    assert made.exit_code == 0, made.output
    assert f"private key {identity} (0600): move it offline" in made.output
    store = EscrowStore.default()
    store.put("luks-recovery", "vm1", "/dev/vdb", "s3cret-pass", {"luks_uuid": "u-1"})
    listing = runner.invoke(main, ["escrow", "list"])
    assert listing.exit_code == 0 and "u-1" in listing.output
    assert "s3cret" not in listing.output
    assert "s3cret" not in runner.invoke(main, ["escrow", "list", "--json"]).output
    no_key = runner.invoke(main, ["escrow", "show", "vm1", "/dev/vdb", "--reason", "swap"])
    assert no_key.exit_code == 2 and "--identity" in no_key.output
    shown = runner.invoke(main, ["escrow", "show", "vm1", "/dev/vdb", "--reason", "disk swap",
                                 "--identity", str(identity), "--operator", "carol", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["secret"] == "s3cret-pass"
    (record,) = store.retrievals()
    assert (record["host"], record["subject"], record["reason"], record["operator"]) == (
        "vm1", "/dev/vdb", "disk swap", "carol")
    missing = runner.invoke(main, ["escrow", "show", "vm1", "/dev/vdc", "--reason", "x",
                                   "--identity", str(identity)])
    assert missing.exit_code == 1
    assert "no luks-recovery escrowed for vm1 /dev/vdc" in missing.output
    assert "Traceback" not in missing.output
    assert runner.invoke(main, ["escrow", "show", "vm1", "/dev/vdb", "--reason", " ",
                                "--identity", str(identity)]).exit_code == 2
    again = runner.invoke(main, ["escrow", "keygen", "--identity", str(tmp_path / "x")])
    assert again.exit_code == 1 and "already has a key pair" in again.output
