"""The baseline: the last known state of every path under the sensitive paths, in SQLite.

One row per path, indexed by its parent directory so a scan reads one directory's rows at a
time (memory stays flat on a tree of 200,000 files).  Only the agent's processing thread
writes it; ``baomi agent status`` reads it from another process (WAL mode allows that).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from baomi.agent.files import FileState, text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, parent BLOB NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, digest TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_parent ON files (parent);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS open_findings (
    subject BLOB NOT NULL, check_id TEXT NOT NULL, found TEXT NOT NULL,
    PRIMARY KEY (subject, check_id)
) WITHOUT ROWID;
"""
_COLUMNS = "path, kind, size, mode, uid, gid, mtime_ns, ctime_ns, ino, digest"


def _row(r: tuple[object, ...]) -> FileState:
    return FileState(os.fsdecode(r[0]), *r[1:])  # type: ignore[arg-type]


def _b(path: str) -> bytes:
    """Paths are stored as the file system's bytes: a name that is not UTF-8 (any local user
    can make one) round-trips exactly, and sorts bytewise for the subtree ranges."""
    return os.fsencode(path)


def _put_row(s: FileState) -> tuple[object, ...]:
    """The row of one state: its parent folder (``os.path.dirname``'s, as bytes) first."""
    raw = os.fsencode(s.path)
    cut = raw.rfind(b"/")
    return (raw[:cut] if cut > 0 else b"/" if cut == 0 else b"", raw, *s[1:])


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """A 0600 SQLite file in WAL mode (readers in other processes never block the agent)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db


def _range(path: str) -> tuple[bytes, bytes, bytes]:
    """The path, and the bounds of everything below it ('/' + 1 is '0')."""
    raw = _b(path)
    return raw, raw + b"/", raw + b"0"


class State:
    """The baseline DB.  Not thread-safe: one thread (the agent's processor) uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_db(path, _SCHEMA)
        self.db.execute("PRAGMA synchronous=NORMAL")  # the baseline can be rebuilt by a rescan

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, path: str) -> FileState | None:
        r = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?",
                            (_b(path),)).fetchone()
        return _row(r) if r else None

    def children(self, parent: str) -> dict[str, FileState]:
        """The recorded entries of one directory, by name."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE parent = ?", (_b(parent),))
        return {os.path.basename(s.path): s for s in map(_row, rows)}

    def put(self, states: Iterable[FileState]) -> None:
        self.db.executemany(
            f"INSERT OR REPLACE INTO files (parent, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            map(_put_row, states))

    def subtree(self, path: str) -> list[FileState]:
        """The path's row and every row below it."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ? OR "
                               "(path > ? AND path < ?)", _range(path))
        return [_row(r) for r in rows]

    def delete_subtree(self, path: str) -> None:
        self.db.execute("DELETE FROM files WHERE path = ? OR (path > ? AND path < ?)",
                        _range(path))

    def open_findings(self, subject: str) -> dict[str, str]:
        """The standing findings last reported for a subject: check ID → evidence."""
        rows = self.db.execute("SELECT check_id, found FROM open_findings WHERE subject = ?",
                               (_b(subject),))
        return {r[0]: r[1] for r in rows}

    def open_of_check(self, prefix: str) -> dict[tuple[str, str], str]:
        """(check, subject) → evidence of the open findings whose check starts with prefix."""
        rows = self.db.execute("SELECT check_id, subject, found FROM open_findings "
                               "WHERE substr(check_id, 1, ?) = ?", (len(prefix), prefix))
        return {(r[0], os.fsdecode(r[1])): r[2] for r in rows}

    def update_open(self, opened: list[tuple[str, str, str]],
                    closed: list[tuple[str, str]]) -> None:
        """Record findings reported (subject, check, evidence) and resolved (subject, check)."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO open_findings (subject, check_id, found)"
                                " VALUES (?, ?, ?)", ((_b(s), c, text(f)) for s, c, f in opened))
            self.db.executemany("DELETE FROM open_findings WHERE subject = ? AND check_id = ?",
                                ((_b(s), c) for s, c in closed))

    def files_older_than(self, root: str, mtime_ns: int) -> list[FileState]:
        """Regular files under root last modified before ``mtime_ns`` (retention sweeps)."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE kind = 'f' AND "
                               "mtime_ns < ? AND path > ? AND path < ?",
                               (mtime_ns, *_range(root)[1:]))
        return [_row(r) for r in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM files").fetchone()[0])

    def meta(self, key: str) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(r[0]) if r else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
