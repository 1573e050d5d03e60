"""The durable spool: every event is numbered and stored here before anything else happens.

* **Gap-free sequence.** ``seq`` comes from a counter in the same SQLite transaction as the
  rows (never ``AUTOINCREMENT``'s reuse-free-but-gappy rowid), committed with
  ``synchronous=FULL``: a power cut loses nothing that was acknowledged to the caller, and the
  numbers the collector sees are 1, 2, 3… per enrolment (docs/collector-api.md).
* **Deleted only when acknowledged.** :meth:`Spool.ack` deletes rows ``seq <= acked_seq``,
  the collector's "everything up to here is stored".
* **Bounded.** When the bodies exceed ``spool_max_mb``, the lowest severities go first
  (``info``, then ``low``, ``medium``, ``high``; oldest first within one), ``critical``
  never.  A dropped event keeps its ``id``, ``seq`` and ``ts`` and becomes a small
  ``agent.dropped`` event (the collector's acknowledged sequence is contiguous: a missing
  number would stall it for ever, and the same ``seq`` under a new ``id`` is refused), and
  the finding ``agent.spool_dropped`` carries the running count.  Only critical findings can
  make the spool exceed its bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baomi.agent.files import text
from baomi.agent.rules import spool_dropped
from baomi.agent.state import open_db
from baomi.findings import SEVERITY_RANK

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, rank INTEGER NOT NULL, bytes INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_rank ON events (rank, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
CRITICAL = SEVERITY_RANK["critical"]
DROPPED_RANK = -1  # an agent.dropped placeholder: nothing left to drop in it


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# The collector refuses a whole batch over one field too long (docs/collector-api.md); a local
# user can make a path of 4,000 characters, so the agent makes every event fit.
LIMITS = {"subject": 1024, "expected": 4096, "found": 4096}
MAX_DETAILS = 16 * 1024


def clean(value: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def shorten(value: str, limit: int) -> str:
    """At most ``limit`` characters; a cut value ends with a digest of the whole, so two long
    paths that share their first thousand characters stay two subjects."""
    if len(value) <= limit:
        return value
    return value[: limit - 18] + "…#" + hashlib.sha256(value.encode()).hexdigest()[:16]


def fit(finding: dict[str, Any]) -> dict[str, Any]:
    out = clean(finding)
    for key, limit in LIMITS.items():
        if isinstance(out.get(key), str):
            out[key] = shorten(out[key], limit)
    details = out.get("details")
    if details and len(json.dumps(details, ensure_ascii=False)) > MAX_DETAILS - 64:
        out["details"] = {"truncated": True}
    return dict(out)


def event(kind: str, *, finding: dict[str, Any] | None = None,
          data: dict[str, Any] | None = None, ts: str | None = None) -> dict[str, Any]:
    """An event of the collector API without its ``seq`` (the spool numbers it), made to fit
    the API's limits and to be valid UTF-8 whatever the file names are."""
    out: dict[str, Any] = {"id": str(uuid.uuid4()), "ts": ts or now(), "kind": kind}
    if finding is not None:
        out["finding"] = fit(finding)
    if data is not None:
        cleaned = clean(data)
        too_big = len(json.dumps(cleaned, ensure_ascii=False)) > MAX_DETAILS - 64
        out["data"] = {"truncated": True} if too_big else cleaned
    return out


def rank_of(ev: dict[str, Any]) -> int:
    """How readily an event may be dropped: a finding's severity rank; other events
    (history: started, baseline, rescans) count as ``info``; ``resolved`` as its finding
    would not be known here, so as ``low``."""
    if ev["kind"] == "finding":
        return SEVERITY_RANK[ev["finding"]["severity"]]
    if ev["kind"] == "resolved":
        return SEVERITY_RANK["low"]
    return SEVERITY_RANK["info"]


@dataclass(frozen=True)
class Depth:
    events: int
    bytes: int
    first_seq: int | None
    last_seq: int
    acked_seq: int
    dropped: int


class Spool:
    """Thread-safe: the processor appends, the shipper reads and acknowledges."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.db = open_db(path, _SCHEMA)
        self.db.execute("PRAGMA synchronous=FULL")
        self.appended = threading.Condition(self._lock)
        self._last = (self._meta("next_seq") or 1) - 1

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _meta(self, key: str) -> int:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(r[0]) if r else 0

    def _set(self, key: str, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def append(self, events: list[dict[str, Any]]) -> list[int]:
        """Number and store events durably (one transaction); returns their sequence numbers.
        Makes room first if the bound is reached."""
        if not events:
            return []
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                seqs = self._append(events)
                self._make_room()
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._last = self._meta("next_seq") - 1
            self.appended.notify_all()
        return seqs

    def _append(self, events: list[dict[str, Any]]) -> list[int]:
        seq = self._meta("next_seq") or 1
        seqs, rows = [], []
        for ev in events:
            body = json.dumps({**ev, "seq": seq}, ensure_ascii=False, separators=(",", ":"))
            size = len(body.encode())
            rows.append((seq, rank_of(ev), size, body))
            seqs.append(seq)
            seq += 1
        self.db.executemany("INSERT INTO events (seq, rank, bytes, body) VALUES (?,?,?,?)", rows)
        self._set("next_seq", seq)
        self._set("bytes", self._meta("bytes") + sum(r[2] for r in rows))
        return seqs

    def _make_room(self) -> None:
        total = self._meta("bytes")
        if total <= self.max_bytes:
            return
        dropped: dict[str, int] = {}
        victims = self.db.execute(
            "SELECT seq, rank, bytes, body FROM events WHERE rank >= 0 AND rank < ? "
            "ORDER BY rank, seq", (CRITICAL,))
        replaced = []
        for seq, _rank, size, body in victims:
            if total <= self.max_bytes:
                break
            ev = json.loads(body)
            finding = ev.get("finding") or {}
            small = json.dumps({"id": ev["id"], "seq": seq, "ts": ev["ts"],
                                "kind": "agent.dropped",
                                "data": {"kind": ev["kind"], "check": finding.get("check"),
                                         "severity": finding.get("severity")}},
                               separators=(",", ":"))
            replaced.append((DROPPED_RANK, len(small), small, seq))
            total -= size - len(small)
            severity = finding.get("severity") or "info"
            dropped[severity] = dropped.get(severity, 0) + 1
        if not replaced:
            return
        self.db.executemany("UPDATE events SET rank = ?, bytes = ?, body = ? WHERE seq = ?",
                            replaced)
        count = self._meta("dropped") + len(replaced)
        self._set("dropped", count)
        self._set("bytes", total)
        self._append([event("finding", finding=spool_dropped(count, dropped).as_dict())])

    def batch(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events with ``seq > after``, in order."""
        return [json.loads(b) for b in self.raw_batch(after, limit)[2]]

    def raw_batch(self, after: int, limit: int) -> tuple[int, int, list[str]]:
        """The same as stored JSON text (the shipper sends it as it is), with the first and
        last sequence numbers (0, 0 when there is nothing)."""
        with self._lock:
            rows = self.db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq "
                                   "LIMIT ?", (after, limit)).fetchall()
        if not rows:
            return 0, 0, []
        return int(rows[0][0]), int(rows[-1][0]), [str(r[1]) for r in rows]

    def ack(self, acked_seq: int) -> int:
        """Delete everything the collector stored (``seq <= acked_seq``); returns rows deleted.

        Not flushed to disk (``synchronous=NORMAL`` for this transaction only): an
        acknowledgement lost in a power cut means those events are sent again, and the
        collector stores an event id once.  One ``fsync`` per batch less, and the processor's
        appends (same lock) no longer wait behind one."""
        with self._lock:
            self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                freed = self.db.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM events "
                                        "WHERE seq <= ?", (acked_seq,)).fetchone()
                self.db.execute("DELETE FROM events WHERE seq <= ?", (acked_seq,))
                self._set("bytes", max(0, self._meta("bytes") - int(freed[1])))
                self._set("acked_seq", max(acked_seq, self._meta("acked_seq")))
                self.db.execute("COMMIT")
            finally:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                self.db.execute("PRAGMA synchronous=FULL")
        return int(freed[0])

    def depth(self) -> Depth:
        with self._lock:
            count, first = self.db.execute("SELECT count(*), min(seq) FROM events").fetchone()
            return Depth(int(count), self._meta("bytes"), first,
                         (self._meta("next_seq") or 1) - 1, self._meta("acked_seq"),
                         self._meta("dropped"))

    def wait(self, after_seq: int, timeout: float) -> bool:
        """Sleep until an event after ``after_seq`` is spooled (True) or ``timeout`` passes
        (False: the shipper's idle tick).  No lost wake-up: the condition is re-checked under
        the lock the appender notifies with."""
        with self._lock:
            return self.appended.wait_for(lambda: self._last > after_seq, timeout)
