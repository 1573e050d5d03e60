"""The collector as baomi's system of record: escrow, ledger, account and wipe records.

Routes (docs/collector-api.md, "System of record"), registered by :func:`routes` from
``create_app`` with the app's own authentication (``who``), refusal handling (``endpoint``)
and size-capped body reader:

- ``GET|POST /api/v1/records/{stream}``, ``GET /api/v1/records/{stream}/{uid}``: the streams
  of :mod:`baomi.recordstore`; a record is stored once per ``uid`` (the same content again is
  "existing", other content is 409), so a repeated import stores nothing twice;
- ``GET|PUT /api/v1/escrow/recipient``: the escrow's public key (the private half stays
  offline: the collector holds ciphertext it cannot open);
- ``POST /api/v1/escrow/retrieve``: ``it`` only; the retrieval (who by the session, why,
  the operator's own facts) is stored and logged in the transaction that hands out the sealed
  entry;
- ``GET /api/v1/log``, ``GET /api/v1/log/verify``: the hash-chained log (it, auditor).

Every write appends its line to :mod:`baomi.collector.auditlog` in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from baomi.collector import auditlog
from baomi.collector.db import Database, Tx
from baomi.collector.store import NotFound, Principal
from baomi.collector.validate import Invalid
from baomi.recordstore import (
    ACCOUNTS,
    ESCROW,
    LEDGER,
    RETRIEVALS,
    STREAMS,
    WIPE,
    Retrieval,
    canonical,
    digest,
    latest_entry,
    new_uid,
    retrieval_record,
)

IT = frozenset({"it"})
READERS = frozenset({"it", "auditor"})
# Who reads each stream: HR follows offboarding; nobody but `it` ever gets a sealed secret.
READ = {ESCROW: READERS, RETRIEVALS: READERS, LEDGER: READERS | {"hr"}, ACCOUNTS: READERS,
        WIPE: READERS}
RECIPIENT_LINE = re.compile(r"BAOMI-ESCROW-RECIPIENT-1 [A-Za-z0-9+/=]+")
UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
MAX_RECORD = 64 * 1024
MAX_BATCH = 500
ESCROW_FIELDS = ("id", "kind", "host", "subject", "created", "recipient", "sealed")
SUMMARY = ("kind", "host", "subject", "user", "state", "event", "ticket", "action", "requester",
           "approver", "by", "operator", "reason", "device", "serial", "entry")
RECIPIENT = ("escrow-recipient", "recipient")  # (stream, uid) of the one public key record

Who = Callable[[Request, frozenset[str]], Awaitable[Principal]]
Handler = Callable[[Request], Awaitable[Response]]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stream(request: Request) -> str:
    stream = str(request.path_params["stream"])
    if stream not in STREAMS:
        raise NotFound(f"stream {stream[:40]!r}: not one of {', '.join(STREAMS)}")
    return stream


def _text(body: Any, key: str, limit: int) -> str:
    """One line of text: not blank, no control characters (C0, DEL, C1)."""
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise Invalid(f"{key}: expected a non-empty line of text (at most {limit} characters)")
    return value


def check_record(stream: str, record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise Invalid(f"{where}: expected a JSON object")
    if len(canonical(record).encode()) > MAX_RECORD:
        raise Invalid(f"{where}: larger than {MAX_RECORD} bytes")
    if stream == ESCROW:
        bad = [k for k in ESCROW_FIELDS if not isinstance(record.get(k), str) or not record[k]]
        if bad:
            raise Invalid(f"{where}: an escrow entry needs {', '.join(bad)} (the secret sealed "
                          "to the offline key, never in clear)")
    return record


def parse_batch(stream: str, body: Any) -> list[tuple[str, dict[str, Any]]]:
    items = body.get("records") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise Invalid(f"body: expected {{\"records\": [{{\"uid\": ..., \"record\": {{...}}}}]}} "
                      f"with 1 to {MAX_BATCH} records")
    out = []
    for n, item in enumerate(items):
        uid = item.get("uid") if isinstance(item, dict) else None
        if not isinstance(uid, str) or not UID.fullmatch(uid):
            raise Invalid(f"records[{n}].uid: expected 1-100 letters, digits, '.', '_', ':', '-'")
        out.append((uid, check_record(stream, item.get("record"), f"records[{n}].record")))
    return out


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the log line says about a record: names and tickets, never a sealed secret."""
    return {k: str(record[k])[:200] for k in SUMMARY
            if isinstance(record.get(k), str | int) and not isinstance(record.get(k), bool)}


def store_one(tx: Tx, who: Principal, stream: str, uid: str, record: dict[str, Any],
              action: str | None = None) -> bool:
    """Store a record once (True), or find the same one stored (False); 409 for other
    content under that uid. The log line names the record and its digest."""
    body, dig = canonical(record), digest(record)
    row = tx.one("SELECT digest FROM records WHERE stream = ? AND uid = ?", (stream, uid))
    if row is not None:
        if row[0] != dig:
            raise Invalid(f"{stream}/{uid}: already stored with other content (records are "
                          "never rewritten)", 409)
        return False
    seq = auditlog.append(tx, who.name, who.role, action or f"{stream}.append",
                          {"stream": stream, "uid": uid, "digest": dig, **_summary(record)})
    tx.run("INSERT INTO records (stream, uid, body, digest, at, by_user, log_seq) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)", (stream, uid, body, dig, _now(), who.name, seq))
    return True


def store_batch(tx: Tx, who: Principal, stream: str,
                items: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    stored = sum(store_one(tx, who, stream, uid, record) for uid, record in items)
    return {"stored": stored, "existing": len(items) - stored}


def _shown(stream: str, body: str) -> dict[str, Any]:
    import json

    record: dict[str, Any] = json.loads(body)
    if stream == ESCROW:
        record.pop("sealed", None)  # listings never carry the ciphertext; retrieve does
    return record


def list_records(tx: Tx, stream: str, after: int, limit: int) -> dict[str, Any]:
    found = tx.all("SELECT id, uid, at, by_user, body FROM records WHERE stream = ? AND id > ? "
                   "ORDER BY id LIMIT ?", (stream, after, limit + 1))
    items = [{"uid": u, "at": a, "by": b, "record": _shown(stream, body)}
             for _, u, a, b, body in found[:limit]]
    return {"records": items, "next": found[limit - 1][0] if len(found) > limit else None}


def get_record(tx: Tx, stream: str, uid: str) -> dict[str, Any]:
    row = tx.one("SELECT uid, at, by_user, digest, body FROM records WHERE stream = ? AND uid = ?",
                 (stream, uid))
    if row is None:
        raise NotFound(f"{stream}/{uid[:100]}: not found")
    return {"uid": row[0], "at": row[1], "by": row[2], "digest": row[3],
            "record": _shown(stream, row[4])}


def recipient(tx: Tx) -> dict[str, Any]:
    row = tx.one("SELECT body FROM records WHERE stream = ? AND uid = ?", RECIPIENT)
    return {"recipient": _shown(RECIPIENT[0], row[0])["line"] if row else None}


def set_recipient(tx: Tx, who: Principal, line: str) -> dict[str, Any]:
    if store_one(tx, who, RECIPIENT[0], RECIPIENT[1], {"line": line}, "escrow.recipient"):
        return {"recipient": line, "stored": True}
    return {"recipient": line, "stored": False}


def retrieve(tx: Tx, who: Principal, r: Retrieval) -> dict[str, Any]:
    """The latest sealed entry, after its retrieval is stored and logged (same transaction)."""
    import json

    entries = [json.loads(b) for (b,) in tx.all(
        "SELECT body FROM records WHERE stream = ? ORDER BY id", (ESCROW,))]
    entry = latest_entry(entries, r)
    if entry is None:
        raise NotFound(f"no {r.kind} escrowed for {r.host} {r.subject}")
    record = retrieval_record(r, str(entry["id"]), collector_user=who.name)
    uid = new_uid()
    store_one(tx, who, RETRIEVALS, uid, record, "escrow.retrieve")
    return {"entry": entry, "retrieval": uid}


def _int(request: Request, key: str, default: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= high:
        raise Invalid(f"{key}: expected a whole number from 0 to {high}")
    return int(raw)


def routes(database: Database, who: Who, endpoint: Callable[[Handler], Handler],
           body_of: Callable[[Request], Awaitable[Any]], api: str = "/api/v1") -> list[Route]:
    """The system of record's routes over the app's ``database`` and helpers."""

    async def records(request: Request) -> Response:
        stream = _stream(request)
        if request.method == "GET":
            await who(request, READ[stream])
            after, limit = _int(request, "after", 0, 2**62), _int(request, "limit", 1000, 5000)
            return JSONResponse(await database.read(
                lambda tx: list_records(tx, stream, after, max(limit, 1))))
        principal = await who(request, IT)
        items = parse_batch(stream, await body_of(request))
        return JSONResponse(await database.write(
            lambda tx: store_batch(tx, principal, stream, items)))

    async def record(request: Request) -> Response:
        stream = _stream(request)
        await who(request, READ[stream])
        uid = str(request.path_params["uid"])
        return JSONResponse(await database.read(lambda tx: get_record(tx, stream, uid)))

    async def escrow_recipient(request: Request) -> Response:
        if request.method == "GET":
            await who(request, READERS)
            return JSONResponse(await database.read(recipient))
        principal = await who(request, IT)
        line = _text(await body_of(request), "recipient", 200)
        if not RECIPIENT_LINE.fullmatch(line):
            raise Invalid("recipient: expected the public key line 'BAOMI-ESCROW-RECIPIENT-1 …'")
        return JSONResponse(await database.write(lambda tx: set_recipient(tx, principal, line)))

    async def escrow_retrieve(request: Request) -> Response:
        principal = await who(request, IT)  # auditor and hr: 403, whatever they send
        body = await body_of(request)
        operator = body.get("operator", {}) if isinstance(body, dict) else None
        if not isinstance(operator, dict) or len(canonical(operator)) > 2048:
            raise Invalid("operator: expected a small JSON object (who, from which login)")
        r = Retrieval(_text(body, "kind", 100), _text(body, "host", 253),
                      _text(body, "subject", 1000), _text(body, "reason", 1000), operator)
        return JSONResponse(await database.write(lambda tx: retrieve(tx, principal, r)))

    async def log(request: Request) -> Response:
        await who(request, READERS)
        after, limit = _int(request, "after", 0, 2**62), _int(request, "limit", 1000, 5000)
        lines = await database.read(lambda tx: auditlog.rows(tx, after, max(limit, 1)))
        return JSONResponse({"lines": lines,
                             "next": lines[-1]["seq"] if len(lines) == max(limit, 1) else None})

    async def log_verify(request: Request) -> Response:
        await who(request, READERS)
        return JSONResponse(await database.read(auditlog.check))

    return [
        Route(f"{api}/records/{{stream}}", endpoint(records), methods=["GET", "POST"]),
        Route(f"{api}/records/{{stream}}/{{uid}}", endpoint(record), methods=["GET"]),
        Route(f"{api}/escrow/recipient", endpoint(escrow_recipient), methods=["GET", "PUT"]),
        Route(f"{api}/escrow/retrieve", endpoint(escrow_retrieve), methods=["POST"]),
        Route(f"{api}/log", endpoint(log), methods=["GET"]),
        Route(f"{api}/log/verify", endpoint(log_verify), methods=["GET"]),
    ]
