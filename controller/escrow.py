"""Key escrow on the controller: recovery secrets never live only on the host they protect.

LUKS recovery passphrases (R-ENC) and restic repository passwords (R-BAK) are stored here,
encrypted with a key that is generated at first use (Fernet: AES-128-CBC + HMAC-SHA256) and
kept beside the store with mode 0600.  Every retrieval is recorded (who, when, why) in an
append-only log, so a recovery leaves evidence.  The collector issue moves this store onto the
collector; the API stays the same.

    store = EscrowStore.default()
    store.put("luks-recovery", "srv1", "/dev/vdb", secret, {"luks_uuid": "…"})
    entry = store.retrieve("luks-recovery", "srv1", "/dev/vdb", reason="disk failure")
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from baomi.records import RecordError, append_jsonl, read_jsonl

DEFAULT_DIR = "/var/lib/baomi/escrow"


class EscrowError(Exception):
    """The escrow store cannot do what was asked; the message says what and where."""


@dataclass(frozen=True)
class Entry:
    id: str
    kind: str
    host: str
    subject: str
    created: str
    meta: dict[str, Any]
    secret: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _operator() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or getpass.getuser()


class EscrowStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    @classmethod
    def default(cls) -> EscrowStore:
        return cls(os.environ.get("BAOMI_ESCROW_DIR", DEFAULT_DIR))

    @property
    def entries_file(self) -> Path:
        return self.dir / "entries.jsonl"

    @property
    def retrievals_file(self) -> Path:
        return self.dir / "retrievals.jsonl"

    def _fernet(self, create: bool) -> Fernet:
        key_file = self.dir / "escrow.key"
        if not key_file.exists():
            if not create:
                raise EscrowError(f"{self.dir}: no escrow store here (nothing was escrowed)")
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        mode = key_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise EscrowError(f"{key_file} has mode {mode:04o}; it must be 0600 (chmod 0600)")
        try:
            return Fernet(key_file.read_bytes().strip())
        except ValueError:
            raise EscrowError(f"{key_file}: not an escrow key (a Fernet key)") from None

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        append_jsonl(path, [record])

    def put(self, kind: str, host: str, subject: str, secret: str,
            meta: dict[str, Any] | None = None) -> str:
        """Escrow a secret; returns the entry id.  Older entries stay (history of rotations)."""
        token = self._fernet(create=True).encrypt(secret.encode()).decode()
        entry_id = str(uuid.uuid4())
        self._append(self.entries_file, {
            "id": entry_id, "kind": kind, "host": host, "subject": subject,
            "created": _now(), "meta": meta or {}, "token": token})
        return entry_id

    def _records(self) -> list[dict[str, Any]]:
        try:
            records = read_jsonl(self.entries_file, strict=True)
        except RecordError as exc:
            raise EscrowError(str(exc)) from None
        for number, record in enumerate(records, 1):
            missing = {"id", "kind", "host", "subject", "created", "token"} - set(record)
            if missing:
                raise EscrowError(f"{self.entries_file}: record {number} lacks "
                                  f"{', '.join(sorted(missing))}")
        return records

    def entries(self) -> list[dict[str, Any]]:
        """Every entry without its secret (for listings and audits)."""
        return [{k: v for k, v in r.items() if k != "token"} for r in self._records()]

    def has(self, kind: str, host: str, subject: str) -> bool:
        return any(r["kind"] == kind and r["host"] == host and r["subject"] == subject
                   for r in self._records())

    def _latest(self, kind: str, host: str, subject: str) -> dict[str, Any]:
        matches = [r for r in self._records()
                   if r["kind"] == kind and r["host"] == host and r["subject"] == subject]
        if not matches:
            raise EscrowError(f"no {kind} escrowed for {host} {subject}")
        return matches[-1]

    def _open(self, record: dict[str, Any]) -> Entry:
        try:
            secret = self._fernet(create=False).decrypt(record["token"].encode()).decode()
        except InvalidToken:
            raise EscrowError(f"entry {record['id']} cannot be decrypted with "
                              f"{self.dir / 'escrow.key'} (wrong key?)") from None
        return Entry(record["id"], record["kind"], record["host"], record["subject"],
                     record["created"], record.get("meta", {}), secret)

    def peek(self, kind: str, host: str, subject: str) -> Entry:
        """The latest entry, for the deploy that wrote it (not recorded as a retrieval)."""
        return self._open(self._latest(kind, host, subject))

    def retrieve(self, kind: str, host: str, subject: str, reason: str) -> Entry:
        """The latest entry for a recovery; the retrieval is recorded first."""
        record = self._latest(kind, host, subject)
        self._append(self.retrievals_file, {
            "time": _now(), "operator": _operator(), "entry": record["id"], "kind": kind,
            "host": host, "subject": subject, "reason": reason})
        return self._open(record)

    def retrievals(self) -> list[dict[str, Any]]:
        try:
            return read_jsonl(self.retrievals_file, strict=True)
        except RecordError as exc:
            raise EscrowError(str(exc)) from None
