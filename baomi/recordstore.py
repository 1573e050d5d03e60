"""Where baomi's records live: one interface, the local state dir or the collector's API.

baomi keeps five kinds of evidence, each an append-only *stream* of JSON records: escrowed
recovery secrets (sealed to the offline identity; the controller can write, never read them)
and their retrievals (R-ENC, R-BAK), the offboarding ledger (R-OFF, R-RET), account requests
and revocations (R-PRV), and one-time wipe permissions with their use (R-DST: what was
destroyed, on whose word). Two controllers writing to their own files disagree (a second
controller refused LUKS volumes the first escrowed), so the policy can name the collector as
the one system of record (``collector.records: collector``); every command and deploy asks
:func:`open_store` and works the same on either.

- :class:`LocalStore`: today's files (``$BAOMI_STATE_DIR``, ``$BAOMI_ESCROW_DIR``), written by
  :mod:`baomi.records` (0600, flock, fsync). The default.
- the collector (``baomi.controller.records_remote.CollectorStore``, loaded by name: the core
  imports no room): the ``baomi login`` session's HTTPS API; the collector stores each record
  once per ``uid``, logs who wrote it in its hash-chained log, and answers an escrow retrieval
  only to the ``it`` role, recording who and why before the ciphertext leaves.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from baomi.records import RecordError, append_jsonl, read_jsonl, state_dir

ESCROW = "escrow"
RETRIEVALS = "escrow-retrievals"
LEDGER = "offboarding"
ACCOUNTS = "accounts"
WIPE = "wipe"
STREAMS = (ESCROW, RETRIEVALS, LEDGER, ACCOUNTS, WIPE)
DEFAULT_ESCROW_DIR = "/var/lib/baomi/escrow"
REMOTE = "baomi.controller.records_remote:CollectorStore"


def escrow_dir() -> Path:
    """``$BAOMI_ESCROW_DIR``, else /var/lib/baomi/escrow."""
    return Path(os.environ.get("BAOMI_ESCROW_DIR") or DEFAULT_ESCROW_DIR)


def canonical(record: dict[str, Any]) -> str:
    """The one text of a record that digests and comparisons use (sorted keys, no spaces)."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record).encode()).hexdigest()


def new_uid() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Retrieval:
    """Who asks for an escrowed secret and why (recorded before the ciphertext is given)."""

    kind: str
    host: str
    subject: str
    reason: str
    operator: dict[str, Any]


class RecordStore(Protocol):
    """What every command needs from a store of records; both implementations fit it."""

    @property
    def where(self) -> str:
        """A folder or a collector URL, for messages."""

    def append(self, stream: str, records: list[dict[str, Any]]) -> None:
        """Append records to STREAM; never rewrites one."""

    def read(self, stream: str, *, strict: bool = False) -> list[dict[str, Any]]:
        """STREAM's records in the order they were written (escrow entries without their
        sealed secret when the store is the collector's)."""

    def recipient(self) -> str | None:
        """The escrow's public key line (``BAOMI-ESCROW-RECIPIENT-1 …``), or None."""

    def set_recipient(self, line: str) -> None:
        """Keep the escrow's public key line (refused when another one is kept)."""

    def open_escrow(self, retrieval: Retrieval) -> dict[str, Any]:
        """Record the retrieval, then return the latest sealed entry it names."""


class LocalStore:
    """The controller's own files (the default without a collector)."""

    def __init__(self, state: Path | None = None, escrow: Path | None = None) -> None:
        self.state = state or state_dir()
        self.escrow = escrow or escrow_dir()

    @property
    def where(self) -> str:
        return str(self.state)

    def path(self, stream: str) -> Path:
        return {ESCROW: self.escrow / "entries.jsonl",
                RETRIEVALS: self.escrow / "retrievals.jsonl",
                LEDGER: self.state / "offboarding" / "ledger.jsonl",
                ACCOUNTS: self.state / "accounts" / "requests.jsonl",
                WIPE: self.state / "disk" / "wipe-permissions.jsonl"}[stream]

    @property
    def recipient_file(self) -> Path:
        return self.escrow / "escrow.pub"

    def append(self, stream: str, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.path(stream), records)

    def read(self, stream: str, *, strict: bool = False) -> list[dict[str, Any]]:
        return read_jsonl(self.path(stream), strict=strict)

    def recipient(self) -> str | None:
        try:
            return self.recipient_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{self.recipient_file}: cannot read the escrow public key "
                              f"({getattr(exc, 'strerror', None) or exc})") from None

    def set_recipient(self, line: str) -> None:
        self.escrow.mkdir(parents=True, exist_ok=True)
        os.chmod(self.escrow, 0o700)
        try:
            fd = os.open(self.recipient_file,
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise RecordError(f"{self.recipient_file} exists: this store already has a key "
                              "pair (its entries open only with that identity)") from None
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(line.strip() + "\n")

    def open_escrow(self, retrieval: Retrieval) -> dict[str, Any]:
        entry = latest_entry(self.read(ESCROW, strict=True), retrieval)
        if entry is None:
            raise RecordError(f"no {retrieval.kind} escrowed for {retrieval.host} "
                              f"{retrieval.subject}")
        self.append(RETRIEVALS, [retrieval_record(retrieval, str(entry.get("id")))])
        return entry


def latest_entry(entries: list[dict[str, Any]], r: Retrieval) -> dict[str, Any] | None:
    """The newest escrow entry for the retrieval's kind, host and subject."""
    found = [e for e in entries if (e.get("kind"), e.get("host"), e.get("subject"))
             == (r.kind, r.host, r.subject)]
    return found[-1] if found else None


def retrieval_record(r: Retrieval, entry: str, **extra: Any) -> dict[str, Any]:
    """The line a retrieval leaves: when, who (the operator's facts), which entry, why."""
    from datetime import UTC, datetime

    return {"time": datetime.now(UTC).isoformat(timespec="seconds"), **r.operator,
            "entry": entry, "kind": r.kind, "host": r.host, "subject": r.subject,
            "reason": r.reason, **extra}


def where_configured(policy_path: str | None = None) -> str:
    """``local`` or ``collector``: the policy's ``collector.records`` (``local`` when there is
    no policy file at all, as on a controller before its first policy)."""
    from baomi.policy import PolicyError, default_policy_path, load

    path = policy_path or default_policy_path()
    if not Path(path).exists():
        return "local"
    try:
        return load(path).collector.records
    except PolicyError as exc:
        raise RecordError(f"{path}: the policy does not load, so where the records live is "
                          f"unknown: {str(exc).splitlines()[0]}") from None


def open_store(policy_path: str | None = None) -> RecordStore:
    """The store the policy names: the local state dir, or the collector (the ``baomi login``
    session's, which must be the policy's ``collector.url``)."""
    if where_configured(policy_path) == "local":
        return LocalStore()
    module_name, name = REMOTE.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RecordError("the policy keeps records at the collector (collector.records: "
                          f"collector); that needs baomi[admin]: {exc}") from None
    store: RecordStore = getattr(module, name).from_session(policy_path)
    return store
