"""R-SEC: the antivirus scan's detections, shipped by the agent as they are recorded.

``baomi-av-scan`` (:mod:`baomi.hostside.av_scan`) appends one JSON line per detection to
:data:`baomi.controls.antivirus.DETECTIONS_LOG` (root, 0600).  The audit reads that record
when it runs; the agent reads what was appended since it last looked (on its supervise tick,
every few seconds) and spools each detection as the check's own finding
(:func:`baomi.controls.antivirus.detection_findings`: ``antivirus.detections``, critical), so
the collector has it, and alerts, within seconds instead of at the next audit.

Where it left off is kept in the agent's state (the file's device, inode and offset) and only
moved on after the findings are in the spool: a restart, a collector away, a crash in between
lose nothing (a line may be shipped twice; the collector keeps one open finding per host,
check and path).  A replaced or truncated file is read from its start; a removed one is
nothing to read.  Only complete lines are taken; a line longer than :data:`MAX_LINE` is
skipped and said.  The file is opened without following a link.  Detections older than the
policy's ``antivirus.report_days`` are not shipped (as the check does not report them).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_READ = 1 << 20  # bytes read per look; the rest waits for the next one
MAX_LINE = 64 << 10
META = "av_detections"  # the state's meta key: "DEV INODE OFFSET"


@dataclass(frozen=True)
class Position:
    dev: int
    inode: int
    offset: int

    def text(self) -> str:
        return f"{self.dev} {self.inode} {self.offset}"

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        parts = (text or "").split()
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


@dataclass(frozen=True)
class Read:
    """What one look found: the parsed lines, the position after them, problems to say, and
    whether more may follow (a whole :data:`MAX_READ` was read)."""

    items: list[dict[str, object]]
    position: Position | None
    problems: list[str]
    more: bool = False


# What baomi-av-scan records (hostside/av_scan.py); anything else in a line is left out.
FIELDS = ("time", "clause", "path", "signature", "action", "quarantine", "reason", "sha256",
          "uid")


def _fields(item: dict[str, object]) -> dict[str, object]:
    """The record's own fields, as strings (no NUL: the collector refuses one) or integers,
    so no line can make a batch the collector refuses (which would stall shipping)."""
    out: dict[str, object] = {}
    for key in FIELDS:
        value = item.get(key)
        if isinstance(value, str):
            out[key] = value.replace("\x00", "\\x00")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 62:
            out[key] = value
    return out


def read_new(path: Path, since: Position | None) -> Read:
    """The complete lines appended to PATH since SINCE (all of them for a new file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Read([], None, [])
    except OSError as exc:
        what = "a link (not read)" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        return Read([], since, [f"{path}: {what}"])
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Read([], since, [f"{path}: not a regular file (not read)"])
        offset = 0
        if since is not None and (since.dev, since.inode) == (st.st_dev, st.st_ino) \
                and since.offset <= st.st_size:
            offset = since.offset
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, MAX_READ)
    finally:
        os.close(fd)
    end = data.rfind(b"\n") + 1
    problems: list[str] = []
    if end == 0 and len(data) >= MAX_READ:  # no line end in a whole read: skip it
        return Read([], Position(st.st_dev, st.st_ino, offset + len(data)),
                    [f"{path}: a line longer than {MAX_READ} bytes at offset {offset} skipped"],
                    more=True)
    items: list[dict[str, object]] = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if len(line) > MAX_LINE:
            problems.append(f"{path}: a line of {len(line)} bytes skipped")
            continue
        try:
            item = json.loads(line)
        except ValueError:
            problems.append(f"{path}: line {number} after offset {offset} is not JSON")
            continue
        if isinstance(item, dict):
            items.append(_fields(item))
    return Read(items, Position(st.st_dev, st.st_ino, offset + end), problems,
                more=len(data) == MAX_READ)
