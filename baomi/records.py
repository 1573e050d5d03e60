"""The controller's own records: where they live and how they are written.

Escrow entries, the offboarding ledger and account requests are append-only JSON lines, mode
0600 in 0700 folders, fsync'd line by line, so evidence is never rewritten and survives a crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class RecordError(Exception):
    """A record file cannot be read; the message names the file (and line)."""


def state_dir() -> Path:
    """``$BAOMI_STATE_DIR``, else /var/lib/baomi."""
    return Path(os.environ.get("BAOMI_STATE_DIR") or "/var/lib/baomi")


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records (0600 file, 0700 folder if new); never rewrites a line."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_jsonl(path: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """The records of a file ([] when absent).  A line that is not a JSON object is skipped,
    or with ``strict`` raises :class:`RecordError` naming ``FILE:LINE``."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read the records: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = None
        if isinstance(item, dict):
            records.append(item)
        elif strict:
            raise RecordError(f"{path}:{number}: not a JSON record")
    return records
