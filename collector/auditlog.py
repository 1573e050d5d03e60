"""The collector's append-only, hash-chained log of human actions (R-AUD, R-LOG).

Each line is (seq, at, actor, role, action, detail) and carries
``hash = sha256(prev + "\\n" + canonical line)``, ``prev`` being the previous line's hash
(64 zeros for the first). A line is appended in the same transaction as the action it
records, so neither exists without the other. Editing any field of a line breaks its hash;
deleting a line breaks the sequence and the next line's ``prev``; deleting the newest lines is
caught by the records that point at them (``records.log_seq``, with the record's digest in
the line) and, for lines no record points at, by a head noted earlier (``--head SEQ:HASH``).
:func:`verify` is pure over rows, so the collector host (reading its database) and a terminal
(reading ``GET /api/v1/log``) check with the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from baomi.collector.db import Tx

GENESIS = "0" * 64
LOCK = 0x6175646974  # "audit": one appender at a time across collectors (PostgreSQL)
COLUMNS = "seq, at, actor, role, action, detail, prev, hash"


def line_hash(prev: str, seq: int, at: str, actor: str, role: str, action: str,
              detail: str) -> str:
    text = json.dumps([seq, at, actor, role, action, detail], ensure_ascii=False)
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


def append(tx: Tx, actor: str, role: str, action: str, detail: dict[str, Any]) -> int:
    """Append one line (in the caller's transaction); its sequence number."""
    tx.lock(LOCK)
    last = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = line_hash(prev, seq, at, actor, role, action, text)
    tx.run(f"INSERT INTO audit_log ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 constant columns
           (seq, at, actor, role, action, text, prev, digest))
    return seq


def rows(tx: Tx, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq"  # noqa: S608 constant
    params: list[Any] = [after]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(zip(COLUMNS.split(", "), row, strict=True)) for row in tx.all(sql, params)]


def verify(lines: Iterable[dict[str, Any]], records: Sequence[tuple[str, str, int, str]] = (),
           head: tuple[int, str] | None = None) -> tuple[int, str, list[str]]:
    """Check the chain: (lines checked, the last hash, problems). ``records`` are
    (stream, uid, log_seq, digest of the stored body) of the records table: each must be
    named, with that digest, by its log line; ``head`` a (seq, hash) noted earlier."""
    problems: list[str] = []
    prev, expected, count = GENESIS, 1, 0
    by_seq: dict[int, dict[str, Any]] = {}
    for line in lines:
        seq = int(line["seq"])
        if seq != expected:
            problems.append(f"line {seq}: expected line {expected} here (lines "
                            f"{expected}..{seq - 1} deleted?)" if seq > expected else
                            f"line {seq}: out of order after line {expected - 1}")
        if line["prev"] != prev:
            problems.append(f"line {seq}: its prev does not match the hash of the line before "
                            "(a line before it deleted or changed)")
        again = line_hash(str(line["prev"]), seq, str(line["at"]), str(line["actor"]),
                          str(line["role"]), str(line["action"]), str(line["detail"]))
        if again != line["hash"]:
            problems.append(f"line {seq}: its content does not match its hash (edited: "
                            f"{line['action']} by {line['actor']} at {line['at']})")
        prev, expected, count = str(line["hash"]), seq + 1, count + 1
        by_seq[seq] = line
    for stream, uid, log_seq, body_digest in records:
        found = by_seq.get(int(log_seq))
        named = _detail(found) if found else {}
        if found is None:
            problems.append(f"record {stream}/{uid}: its log line {log_seq} is missing "
                            "(deleted)")
        elif named.get("uid") != uid or named.get("digest") != body_digest:
            problems.append(f"record {stream}/{uid}: differs from what log line {log_seq} "
                            "recorded (the record or the line was changed)")
    if head is not None:
        seq, digest = head
        if seq not in by_seq:
            problems.append(f"the head noted earlier (line {seq}) is missing (deleted)")
        elif by_seq[seq]["hash"] != digest:
            problems.append(f"line {seq}: not the line noted earlier (hash {digest[:12]}…)")
    return count, prev, problems


def _detail(line: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(str(line["detail"]))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def record_digests(tx: Tx) -> list[tuple[str, str, int, str]]:
    """(stream, uid, log_seq, sha256 of the stored body) of every record, for :func:`verify`:
    the digest is recomputed from the body, so an edited body is caught too."""
    return [(str(s), str(u), int(q), hashlib.sha256(str(b).encode()).hexdigest())
            for s, u, q, b in tx.all("SELECT stream, uid, log_seq, body FROM records "
                                     "ORDER BY id")]


def check(tx: Tx, head: tuple[int, str] | None = None) -> dict[str, Any]:
    """Verify the whole log in the database: the answer of ``verify-log`` and the API."""
    count, last, problems = verify(rows(tx), record_digests(tx), head)
    return {"ok": not problems, "lines": count, "head": f"{count}:{last}" if count else None,
            "problems": problems}


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as ``verify-log`` prints it) → (seq, hash); ValueError otherwise."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"--head {text!r}: expected SEQ:HASH as verify-log printed it")
    return int(seq), digest
