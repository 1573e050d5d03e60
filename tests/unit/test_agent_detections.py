"""R-SEC: the agent reads the antivirus scan's record as it grows (agent/detections.py) and
spools each new detection as the check's own finding; real files in tmp_path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from baomi.agent import detections
from baomi.agent.service import Agent
from baomi.agent.status import status
from baomi.controls.antivirus import DETECTIONS, detection_findings
from baomi.policy import load_text


def line(path: str, when: int | None = None, **extra: object) -> str:
    """A line as baomi-av-scan's record() writes it (sorted keys, ASCII)."""
    entry = {"time": int(time.time()) if when is None else when, "clause": "R-SEC",
             "path": path, "signature": "Eicar-Test-Signature", "action": "quarantined",
             "quarantine": "1796290421-1451372-865d05e3", "sha256": "27" * 32, "uid": 0,
             **extra}
    return json.dumps(entry, ensure_ascii=True, sort_keys=True) + "\n"


def test_only_complete_new_lines_and_the_position_after_them(tmp_path: Path) -> None:
    log = tmp_path / "detections.jsonl"
    assert detections.read_new(log, None) == detections.Read([], None, [])  # none yet
    log.write_text(line("/srv/a") + line("/srv/b"))
    first = detections.read_new(log, None)
    assert [i["path"] for i in first.items] == ["/srv/a", "/srv/b"] and not first.problems
    assert first.position == detections.Position(log.stat().st_dev, log.stat().st_ino,
                                                  log.stat().st_size)
    assert detections.read_new(log, first.position).items == []
    half = line("/srv/d")
    with log.open("a") as f:  # the writer is between two writes of a line
        f.write(line("/srv/c") + half[:10])
    second = detections.read_new(log, first.position)
    assert [i["path"] for i in second.items] == ["/srv/c"]
    with log.open("a") as f:
        f.write(half[10:] + "not json\n" + "[1, 2]\n")
    third = detections.read_new(log, second.position)
    assert [i["path"] for i in third.items] == ["/srv/d"]
    assert third.problems == [f"{log}: line 2 after offset {second.position.offset} is not JSON"]
    assert detections.Position.parse(third.position.text()) == third.position


def test_only_the_records_own_fields_go_on_strings_without_nul_or_integers(
        tmp_path: Path) -> None:
    log = tmp_path / "detections.jsonl"
    log.write_text(json.dumps({"time": 5, "path": "/srv/a\u0000b", "uid": 1.5e300,
                               "sha256": {"deep": [1]}, "extra": "x", "signature": "S",
                               "quarantine": True}) + "\n")
    (item,) = detections.read_new(log, None).items
    assert item == {"time": 5, "path": "/srv/a\\x00b", "signature": "S"}


def test_a_truncated_or_replaced_record_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "detections.jsonl"
    log.write_text(line("/srv/a") + line("/srv/b"))
    at = detections.read_new(log, None).position
    log.write_text(line("/srv/new"))  # truncated in place (same inode, shorter)
    assert [i["path"] for i in detections.read_new(log, at).items] == ["/srv/new"]
    other = tmp_path / "next.jsonl"
    other.write_text(line("/srv/a") + line("/srv/b") + line("/srv/c"))
    os.replace(other, log)  # a new file, longer than the position: still from its start
    assert [i["path"] for i in detections.read_new(log, at).items] == \
        ["/srv/a", "/srv/b", "/srv/c"]
    log.unlink()
    assert detections.read_new(log, at) == detections.Read([], None, [])


def test_a_link_or_a_fifo_in_its_place_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(line("/etc/shadow-looking"))
    log = tmp_path / "detections.jsonl"
    log.symlink_to(secret)
    at = detections.Position(1, 2, 3)
    assert detections.read_new(log, at) == detections.Read([], at, [f"{log}: a link (not read)"])
    log.unlink()
    os.mkfifo(log)  # would block a reader that waited for a writer
    assert detections.read_new(log, at) == detections.Read(
        [], at, [f"{log}: not a regular file (not read)"])


def test_a_line_longer_than_a_read_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "detections.jsonl"
    log.write_bytes(b"x" * detections.MAX_READ + b"\n" + line("/srv/after").encode())
    first = detections.read_new(log, None)
    assert first.items == [] and first.more and "skipped" in first.problems[0]
    second = detections.read_new(log, first.position)
    assert [i["path"] for i in second.items] == ["/srv/after"]


def test_the_finding_is_the_checks_and_old_detections_are_not_reported() -> None:
    now = 1_796_290_421
    old = json.loads(line("/srv/old", now - 31 * 86_400))
    new = json.loads(line("/srv/new", now - 60))
    odd = {"time": True, "path": "/srv/bool"}  # not a time
    far = {"time": 10**20, "path": "/srv/far"}  # beyond what a date can be
    (f,) = detection_findings([old, new, odd, far], now, 30)
    assert (f.check, f.clauses, f.severity, f.subject) == (
        DETECTIONS.id, ("R-SEC",), "critical", "/srv/new")
    assert f.found.startswith("Eicar-Test-Signature at ") and f.found.endswith(
        ": quarantined as 1796290421-1451372-865d05e3")


def test_the_agent_spools_each_new_detection_once(tmp_path: Path) -> None:
    policy = load_text(f"agent:\n  spool_dir: {tmp_path / 'spool'}\n")
    log = tmp_path / "detections.jsonl"
    log.write_text(line("/srv/long-ago", int(time.time()) - 90 * 86_400) + line("/srv/a"))
    agent = Agent(policy, tmp_path / "agent", None, detections_log=log)
    try:
        def spooled() -> list[tuple[str, str]]:
            return [(e["finding"]["check"], e["finding"]["subject"])
                    for e in agent.spool.batch(0, 100) if e.get("kind") == "finding"]

        agent.ship_detections()
        assert spooled() == [("antivirus.detections", "/srv/a")]
        agent.ship_detections()  # nothing new: nothing more
        assert spooled() == [("antivirus.detections", "/srv/a")]
        with log.open("a") as f:
            f.write(line("/srv/b"))
        agent.ship_detections()
        assert spooled() == [("antivirus.detections", "/srv/a"),
                             ("antivirus.detections", "/srv/b")]
        # `baomi agent status` says which record and how far it has been read.
        assert status(agent)["antivirus_record"] == {"path": str(log),
                                                     "offset": log.stat().st_size}
    finally:
        agent.close()
    # A restart goes on from where it left off.
    again = Agent(policy, tmp_path / "agent", None, detections_log=log)
    try:
        again.ship_detections()
        assert len([e for e in again.spool.batch(0, 100) if e.get("kind") == "finding"]) == 2
    finally:
        again.close()
