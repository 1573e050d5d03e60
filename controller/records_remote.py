"""baomi's records at the collector: :class:`baomi.recordstore.RecordStore` over its HTTPS API.

Chosen by :func:`baomi.recordstore.open_store` when the policy says ``collector.records:
collector``; it uses the ``baomi login`` session (pinned CA, bearer token), which must be for
the policy's ``collector.url`` (records never go to a collector the policy does not name).
Each record is sent with a ``uid`` (an escrow entry's own id, else a fresh one) so a retried
request stores it once. Every failure is one :class:`RecordError` line: not logged in, a
role that may not (403), the collector unreachable, a conflict.

:func:`import_local` is ``baomi collector import``: every local record, stream by stream, sent
under a uid derived from its place and content (a second run stores nothing twice), then
read back and compared entry by entry; the local files are only read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from baomi.controller import session as s
from baomi.policy import PolicyError, default_policy_path, load
from baomi.records import RecordError
from baomi.recordstore import ESCROW, STREAMS, LocalStore, Retrieval, canonical, digest, new_uid

BATCH = 200


@dataclass(frozen=True)
class CollectorStore:
    session: s.Session

    @classmethod
    def from_session(cls, policy_path: str | None = None) -> CollectorStore:
        path = policy_path or default_policy_path()
        try:
            url = load(path).collector.url
        except PolicyError as exc:
            raise RecordError(f"{path}: {str(exc).splitlines()[0]}") from None
        try:
            session = s.load()
        except s.SessionError as exc:
            raise RecordError(f"the policy keeps records at the collector {url}: {exc}") \
                from None
        if session.url.rstrip("/") != url.rstrip("/"):
            raise RecordError(f"the policy keeps records at {url} but the session is for "
                              f"{session.url}: run baomi login --collector {url}")
        return cls(session)

    @property
    def where(self) -> str:
        return self.session.url

    def ask(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; every refusal as one line naming what and where."""
        try:
            answer = s.call(self.session.url, self.session.ca, method, path, body,
                            token=self.session.token, timeout=60)
        except s.SessionError as exc:
            raise RecordError(str(exc)) from None
        if answer.status == 401:
            raise RecordError(f"the session of {self.session.user} at {self.session.url} has "
                              "expired or was ended: run baomi login")
        if answer.status == 403:
            raise RecordError(f"{self.session.user} (role {self.session.role}) may not "
                              f"{method} {path.split('?')[0]} at {self.session.url} (403)")
        if answer.status not in (200, 201, 204):
            said = answer.body.get("error") if isinstance(answer.body, dict) else None
            raise RecordError(f"{self.session.url}{path.split('?')[0]}: "
                              f"{' '.join(str(said or 'HTTP error').split())[:300]} "
                              f"({answer.status})")
        return answer.body

    def send(self, stream: str, items: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        totals = {"stored": 0, "existing": 0}
        for start in range(0, len(items), BATCH):
            answer = self.ask("POST", f"/api/v1/records/{stream}", {"records": [
                {"uid": uid, "record": record} for uid, record in items[start:start + BATCH]]})
            for key in totals:
                totals[key] += int(answer[key])
        return totals

    def append(self, stream: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.send(stream, [(str(r["id"]) if stream == ESCROW else new_uid(), r)
                               for r in records])

    def listing(self, stream: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            body = self.ask("GET", f"/api/v1/records/{stream}?after={after}&limit=1000")
            out += body["records"]
            if body.get("next") is None:
                return out
            after = int(body["next"])

    def read(self, stream: str, *, strict: bool = False) -> list[dict[str, Any]]:
        return [item["record"] for item in self.listing(stream)]

    def recipient(self) -> str | None:
        line = self.ask("GET", "/api/v1/escrow/recipient")["recipient"]
        return str(line) if line else None

    def set_recipient(self, line: str) -> None:
        self.ask("PUT", "/api/v1/escrow/recipient", {"recipient": line.strip()})

    def open_escrow(self, retrieval: Retrieval) -> dict[str, Any]:
        answer = self.ask("POST", "/api/v1/escrow/retrieve", {
            "kind": retrieval.kind, "host": retrieval.host, "subject": retrieval.subject,
            "reason": retrieval.reason, "operator": retrieval.operator})
        entry: dict[str, Any] = answer["entry"]
        return entry

    def fetch(self, stream: str, uid: str) -> dict[str, Any]:
        body: dict[str, Any] = self.ask("GET", f"/api/v1/records/{stream}/{quote(uid)}")
        return body


def import_uid(stream: str, number: int, record: dict[str, Any]) -> str:
    """The uid of the NUMBERth local record of STREAM: its place and content, so a second
    import finds it stored and two controllers' different records never collide."""
    if stream == ESCROW and isinstance(record.get("id"), str):
        return str(record["id"])
    return f"imp-{number}-{hashlib.sha256(canonical(record).encode()).hexdigest()[:32]}"


def import_local(local: LocalStore, remote: CollectorStore,
                 progress: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Copy every local record to the collector and verify each one there (content digest and
    the fields it shows). Local files are read strictly (a damaged line stops the import
    naming FILE:LINE, with what came before stored and verified) and never changed."""
    report: dict[str, dict[str, int]] = {}
    if (local.escrow / "escrow.key").exists():
        raise RecordError(f"{local.escrow} is an old (Fernet) escrow store: run baomi escrow "
                          "migrate --identity FILE first (with collector.records: local); "
                          "nothing imported")
    recipient = local.recipient()
    if recipient:
        there = remote.recipient()
        if there and there != recipient:
            raise RecordError(f"{local.recipient_file}: another escrow public key is kept at "
                              f"{remote.where}; entries sealed to two keys would not open "
                              "with one identity: nothing imported")
        if not there:
            remote.set_recipient(recipient)
    for stream in STREAMS:
        records = local.read(stream, strict=True)
        items = [(import_uid(stream, n, r), r) for n, r in enumerate(records, 1)]
        totals = remote.send(stream, items) if items else {"stored": 0, "existing": 0}
        for n, (uid, record) in enumerate(items, 1):
            got = remote.fetch(stream, uid)
            shown = {k: v for k, v in record.items() if not (stream == ESCROW and k == "sealed")}
            if got["digest"] != digest(record) or got["record"] != shown:
                raise RecordError(f"{local.path(stream)}: record {n}: stored at {remote.where} as "
                                  f"{uid} but it reads back different; import stopped")
        report[stream] = {**totals, "verified": len(items)}
        progress(f"{stream}: {len(items)} local, {totals['stored']} stored, "
                 f"{totals['existing']} already there, {len(items)} verified")
    return report
