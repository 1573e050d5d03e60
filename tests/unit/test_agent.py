"""The agent's pure parts and its local stores: rules, coalescing, the spool's numbering and
bound, one file's observation and incremental scans (real files in tmp_path, real SQLite)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from baomi.agent import rules, watch
from baomi.agent.files import FileState, observe
from baomi.agent.scan import Change, Scanner
from baomi.agent.ship import BACKOFF_CAP, backoff
from baomi.agent.spool import Spool, event
from baomi.agent.state import State
from baomi.findings import Finding
from baomi.policy import load_text

POLICY = """
sensitive_paths:
  - path: /data/top
    level: 绝密
    owner: root
    group: legal
  - path: /data/secret
    level: 秘密
    owner: root
    group: staff
    retention_days: 30
  - path: /data/secret/inner
    level: 机密
    owner: root
    group: staff
"""


def names(uid: int, gid: int) -> tuple[str, str]:
    return ({0: "root", 1000: "alice"}.get(uid, str(uid)),
            {0: "root", 50: "staff", 60: "legal"}.get(gid, str(gid)))


def state(path: str, *, kind: str = "f", mode: int = 0o600, uid: int = 0, gid: int = 60,
          digest: str | None = "sha256:aa", mtime_ns: int = 10**18, ino: int = 7) -> FileState:
    return FileState(path, kind, 5, mode, uid, gid, mtime_ns, mtime_ns, ino, digest)


@pytest.fixture
def watched() -> tuple[rules.Watched, ...]:
    return rules.watched(load_text(POLICY), set())


# --- rules ---------------------------------------------------------------------------------

def test_innermost_sensitive_path_owns_a_file(watched: tuple[rules.Watched, ...]) -> None:
    assert rules.owner_of(watched, "/data/secret/a.txt").level.name == "秘密"  # type: ignore[union-attr]
    assert rules.owner_of(watched, "/data/secret/inner/b").level.name == "机密"  # type: ignore[union-attr]
    assert rules.owner_of(watched, "/data/secretive/x") is None
    assert rules.owner_of(watched, "/data/top").path == "/data/top"  # type: ignore[union-attr]


def test_drift_names_the_change_its_clause_and_the_levels_severity(
        watched: tuple[rules.Watched, ...]) -> None:
    top = rules.owner_of(watched, "/data/top/f")
    assert top is not None
    old = state("/data/top/f")
    cases = {
        "created": Change(None, old),
        "deleted": Change(old, None),
        "content": Change(old, state("/data/top/f", digest="sha256:bb")),
        "mode": Change(old, state("/data/top/f", mode=0o640)),
        "owner": Change(old, state("/data/top/f", uid=1000)),
        "group": Change(old, state("/data/top/f", gid=50)),
        "moved": Change(state("/data/top/e"), old, moved_from="/data/top/e"),
        "kind": Change(old, state("/data/top/f", kind="l", digest=None)),
    }
    for kind, change in cases.items():
        (f,) = rules.drift(top, change, names)
        assert f.check == f"agent.drift.{kind}"
        assert f.clauses == ("R-FIM",)
        assert f.severity == "critical"  # 绝密 is audited: integrity required
        assert f.subject == "/data/top/f"
    (f,) = rules.drift(top, cases["owner"], names)
    assert (f.expected, f.found) == ("owner root", "owner alice")


def test_drift_under_a_level_without_integrity_is_info(
        watched: tuple[rules.Watched, ...]) -> None:
    w = rules.owner_of(watched, "/data/secret/x")
    assert w is not None
    (f,) = rules.drift(w, Change(None, state("/data/secret/x")), names)
    assert f.severity == "info"


def test_one_change_of_mode_and_owner_gives_both_and_no_content(
        watched: tuple[rules.Watched, ...]) -> None:
    w = rules.owner_of(watched, "/data/top/f")
    assert w is not None
    found = rules.drift(w, Change(state("/data/top/f"),
                                  state("/data/top/f", mode=0o644, uid=1000)), names)
    assert [f.check for f in found] == ["agent.drift.mode", "agent.drift.owner"]


def test_standing_acl_uses_the_levels_ceiling_and_the_paths_owner(
        watched: tuple[rules.Watched, ...]) -> None:
    w = rules.owner_of(watched, "/data/top/f")
    assert w is not None
    now = 10**18 + 10**9
    assert rules.standing(w, state("/data/top/f"), names, now) == []
    loose = rules.standing(w, state("/data/top/f", mode=0o640), names, now)
    assert [(f.check, f.clauses, f.severity) for f in loose] == [
        ("sensitive_paths.file_mode", ("R-ACL",), "critical")]
    owned = rules.standing(w, state("/data/top/f", uid=1000, gid=50), names, now)
    assert [f.check for f in owned] == ["sensitive_paths.ownership"]
    assert "alice:staff" in owned[0].found
    assert rules.standing(w, None, names, now) == []
    assert rules.standing(w, state("/data/top/l", kind="l", mode=0o777), names, now) == []


def test_retention_from_the_path_else_the_level(watched: tuple[rules.Watched, ...]) -> None:
    w = rules.owner_of(watched, "/data/secret/old")
    assert w is not None and w.retention_days == 30
    made = 10**18
    young = rules.standing(w, state("/data/secret/old", gid=50, mode=0o640, mtime_ns=made),
                           names, made + 30 * rules.DAY_NS)
    assert young == []
    (old,) = rules.standing(w, state("/data/secret/old", gid=50, mode=0o640, mtime_ns=made),
                            names, made + 31 * rules.DAY_NS)
    assert (old.check, old.clauses, old.severity) == ("destruction.retention", ("R-DST",),
                                                      "medium")
    inner = rules.owner_of(watched, "/data/secret/inner/x")
    assert inner is not None and inner.retention_days == 1825


def test_findings_never_carry_contents(watched: tuple[rules.Watched, ...]) -> None:
    w = rules.owner_of(watched, "/data/top/f")
    assert w is not None
    found = rules.drift(w, Change(state("/data/top/f"), state("/data/top/f", digest="sha256:cc")),
                        names)
    text = repr([f.as_dict() for f in found])
    assert "sha256:cc" in text and "content " in text  # hashes and sizes, nothing else


# --- coalescing ----------------------------------------------------------------------------

def test_a_burst_on_one_path_is_one_item() -> None:
    pending = watch.Pending()
    for _ in range(1000):
        pending.add("/data/top/f")
    pending.add("/data/top/g", moved_from="/data/top/e")
    items, overflow = pending.take(timeout=2)
    assert not overflow
    assert sorted(items) == [("/data/top/f", None), ("/data/top/g", "/data/top/e")]
    assert pending.events == 1001


def test_the_coalescing_queue_is_bounded_and_asks_for_a_rescan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_PENDING", 10)
    pending = watch.Pending()
    for i in range(11):
        pending.add(f"/data/top/{i}")
    assert len(pending) == 0
    assert pending.take(timeout=0.1) == ([], True)
    assert pending.overflows == 1


def test_the_handler_never_raises() -> None:
    pending = watch.Pending()
    seen: list[str] = []
    handler = watch.Handler(pending, seen.append)
    handler.on_any_event(object())  # type: ignore[arg-type]  # not an event at all
    assert pending.take(timeout=0.1) == ([], True)  # it lost track: rescan
    assert seen and "watch handler" in seen[0]


# --- spool ---------------------------------------------------------------------------------

def finding_event(severity: str, n: int = 0) -> dict[str, object]:
    f = Finding("agent.drift.content", ("R-FIM",), severity, f"/data/f{n}", "a", "b")
    return event("finding", finding=f.as_dict())


def test_spool_numbers_gap_free_across_restarts_and_deletes_only_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", 1 << 20)
    assert spool.append([finding_event("low", i) for i in range(3)]) == [1, 2, 3]
    spool.close()
    spool = Spool(tmp_path / "spool.db", 1 << 20)
    assert spool.append([finding_event("low")]) == [4]
    assert [e["seq"] for e in spool.batch(0, 10)] == [1, 2, 3, 4]
    assert spool.ack(2) == 2
    assert [e["seq"] for e in spool.batch(spool.depth().acked_seq, 10)] == [3, 4]
    depth = spool.depth()
    assert (depth.events, depth.first_seq, depth.last_seq, depth.acked_seq) == (2, 3, 4, 2)
    assert os.stat(tmp_path / "spool.db").st_mode & 0o777 == 0o600


def test_full_spool_drops_lowest_first_never_critical_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", 4000)
    spool.append([finding_event("critical", i) for i in range(5)])
    spool.append([finding_event("info", i) for i in range(5)])
    spool.append([finding_event("medium", i) for i in range(5)])
    spool.append([finding_event("high", i) for i in range(10)])
    events = spool.batch(0, 1000)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # still gap-free: placeholders keep seq + id
    by_kind: dict[str, list[dict[str, object]]] = {}
    for e in events:
        key = e["kind"] if e["kind"] != "finding" else e["finding"]["severity"]
        by_kind.setdefault(key, []).append(e)
    assert len(by_kind["critical"]) == 5
    dropped = [e["data"]["severity"] for e in by_kind["agent.dropped"]]
    assert dropped[:5] == ["info"] * 5 and "critical" not in dropped
    order = {"info": 0, "medium": 1, "high": 2}
    assert dropped == sorted(dropped, key=order.__getitem__)
    reports = [e["finding"] for e in by_kind.get("high", [])
               if e["finding"]["check"] == "agent.spool_dropped"]
    assert reports and f"{spool.depth().dropped} findings dropped" in reports[-1]["found"]


def test_a_full_spool_of_critical_findings_keeps_them_all(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", 1000)
    spool.append([finding_event("critical", i) for i in range(20)])
    assert spool.depth().events == 20 and spool.depth().dropped == 0


def test_the_shippers_wait_wakes_on_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", 1 << 20)
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(spool.wait(0, 10)))
    t.start()
    spool.append([finding_event("low")])
    t.join(5)
    assert woke == [True]
    assert spool.wait(1, 0.01) is False


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    for attempt in range(30):
        d = backoff(attempt)
        assert 0 < d <= BACKOFF_CAP
    assert backoff(0) <= 0.5 and backoff(20) >= BACKOFF_CAP / 2


# --- files and scans -----------------------------------------------------------------------

def test_observe_hashes_regular_files_and_never_follows_or_blocks(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"customer record")
    s = observe(str(f))
    assert s is not None and s.kind == "f" and s.size == 15
    assert s.digest == "sha256:" + hashlib.sha256(b"customer record").hexdigest()
    (tmp_path / "link").symlink_to("/etc/shadow")
    link = observe(str(tmp_path / "link"))
    assert link is not None and link.kind == "l" and link.digest is None
    os.mkfifo(tmp_path / "fifo")
    fifo = observe(str(tmp_path / "fifo"))
    assert fifo is not None and fifo.kind == "p"
    assert observe(str(tmp_path / "missing")) is None
    big = observe(str(f), max_bytes=10)
    assert big is not None and big.digest is None


def test_scans_are_incremental_and_see_every_kind_of_change(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    for i in range(50):
        (root / "a" / f"f{i}").write_text(f"record {i}")
    (root / "a" / "b" / "deep").write_text("deep")
    db = State(tmp_path / "state.db")
    scanner = Scanner(db, "sha256", 1 << 30, workers=4)
    changes: list[Change] = []
    first = scanner.scan(str(root), changes.extend)
    assert (first.files, first.dirs, first.hashed) == (51, 2, 51)
    assert len(changes) == 54  # root, 2 dirs, 51 files: all new
    changes.clear()
    again = scanner.scan(str(root), changes.extend)
    assert (again.files, again.hashed, changes) == (51, 0, [])

    (root / "a" / "f1").write_text("changed")
    os.chmod(root / "a" / "f2", 0o600)
    (root / "a" / "f3").unlink()
    (root / "a" / "new").write_text("new")
    third = scanner.scan(str(root), changes.extend)
    assert third.hashed == 3  # f1, f2 (ctime changed), new
    by_path = {c.path.rsplit("/", 1)[1]: c for c in changes}
    assert by_path["f1"].old and by_path["f1"].new
    assert by_path["f1"].old.digest != by_path["f1"].new.digest
    assert stat.S_IMODE(by_path["f2"].new.mode) == 0o600  # type: ignore[union-attr]
    assert by_path["f3"].new is None
    assert by_path["new"].old is None
    assert set(by_path) == {"f1", "f2", "f3", "new"}  # a directory's mtime is no finding
    scanner.close()


def test_a_removed_directory_reports_everything_below_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "x").write_text("x")
    db = State(tmp_path / "state.db")
    scanner = Scanner(db, "sha256", 1 << 30, workers=2)
    scanner.scan(str(root), lambda ch: None)
    import shutil

    shutil.rmtree(root / "d")
    changes: list[Change] = []
    scanner.scan(str(root), changes.extend)
    gone = sorted(c.path for c in changes if c.new is None)
    assert gone == [str(root / "d"), str(root / "d" / "e"), str(root / "d" / "e" / "x")]
    assert db.subtree(str(root / "d")) == []
    scanner.close()


def test_a_folders_siblings_with_similar_names_are_not_below_it(tmp_path: Path) -> None:
    """The subtree of /r/d is /r/d and what is under /r/d/, never /r/d-1, /r/d.x or /r/d0
    (the key ranges compare bytes: '-' and '.' sort before '/', '0' right after)."""
    root = tmp_path / "r"
    for name in ("d", "d-1", "d.x", "d0"):
        (root / name / "in").mkdir(parents=True)
        (root / name / "in" / "f").write_text(name)
    db = State(tmp_path / "state.db")
    scanner = Scanner(db, "sha256", 1 << 30)
    scanner.scan(str(root), lambda ch: None)
    below = sorted(s.path for s in db.subtree(str(root / "d")))
    assert below == [str(root / "d"), str(root / "d" / "in"), str(root / "d" / "in" / "f")]
    db.delete_subtree(str(root / "d"))
    assert db.count() == 1 + 3 * 3  # the root and the three siblings' rows
    assert db.get(str(root / "d0" / "in" / "f")) is not None
    assert [s.path for s in db.files_older_than(str(root / "d-1"), 2**62)] == [
        str(root / "d-1" / "in" / "f")]
    scanner.close()


def test_large_files_are_hashed_by_the_pool_and_small_ones_read_ahead(tmp_path: Path) -> None:
    """Both ways of reading give the file's SHA-256 and its fstat, a link is not followed and
    a FIFO does not block the scan."""
    from baomi.agent import reads

    root = tmp_path / "r"
    root.mkdir()
    big = os.urandom(reads.LARGE * 3 + 17)
    (root / "big").write_bytes(big)
    for i in range(reads.IN_FLIGHT * 2 + 3):  # more than the reads kept in flight
        (root / f"s{i:04d}").write_bytes(os.urandom(i % 5000))
    os.symlink("/etc/shadow", root / "link")
    os.mkfifo(root / "fifo")
    db = State(tmp_path / "state.db")
    scanner = Scanner(db, "sha256", 1 << 30)
    stats = scanner.scan(str(root), lambda ch: None)
    assert not stats.errors
    assert stats.files == reads.IN_FLIGHT * 2 + 3 + 3 and stats.hashed == reads.IN_FLIGHT * 2 + 4
    got = db.get(str(root / "big"))
    assert got is not None and got.digest == "sha256:" + hashlib.sha256(big).hexdigest()
    assert got.size == len(big) and got.ino == os.stat(root / "big").st_ino
    small = db.get(str(root / "s0007"))
    assert small is not None
    assert small.digest == "sha256:" + hashlib.sha256((root / "s0007").read_bytes()).hexdigest()
    link, fifo = db.get(str(root / "link")), db.get(str(root / "fifo"))
    assert link is not None and (link.kind, link.digest) == ("l", None)
    assert fifo is not None and (fifo.kind, fifo.digest) == ("p", None)
    scanner.close()


def test_a_version_1_baseline_moves_to_the_new_keys_without_a_finding(tmp_path: Path) -> None:
    """An agent upgraded in place keeps its baseline: the rows of the old layout (keyed by
    path, an index on parent) move over in one transaction and the next scan finds nothing."""
    import sqlite3

    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("x")
    current = State(tmp_path / "new.db")
    scanner = Scanner(current, "sha256", 1 << 30)
    scanner.scan(str(root), lambda ch: None)
    rows = current.db.execute("SELECT parent, path, kind, size, mode, uid, gid, mtime_ns, "
                              "ctime_ns, ino, digest FROM files").fetchall()
    scanner.close()
    current.close()
    old = sqlite3.connect(tmp_path / "old.db")
    old.executescript("""
        CREATE TABLE files (path BLOB PRIMARY KEY, parent BLOB NOT NULL, kind TEXT NOT NULL,
            size INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL,
            gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
            ino INTEGER NOT NULL, digest TEXT) WITHOUT ROWID;
        CREATE INDEX files_parent ON files (parent);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);""")
    old.executemany("INSERT INTO files (parent, path, kind, size, mode, uid, gid, mtime_ns, "
                    "ctime_ns, ino, digest) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    old.execute("INSERT INTO meta VALUES ('baseline', '{}')")
    old.commit()
    old.close()
    moved = State(tmp_path / "old.db")
    assert moved.db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert moved.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'files_parent'"
                            ).fetchone()[0] == 0
    assert moved.count() == len(rows) == 3 and moved.meta("baseline") == "{}"
    changes: list[Change] = []
    again = Scanner(moved, "sha256", 1 << 30)
    stats = again.scan(str(root), changes.extend)
    assert (stats.files, stats.hashed, changes) == (1, 0, [])
    again.close()
    moved.close()
    assert State(tmp_path / "old.db").count() == 3  # opened again: nothing to move


def _tree_for_reader(root: Path) -> int:
    """40 + 3 files, a 2 MiB one, a name that is not UTF-8, a link and a FIFO: 47 entries
    besides the folders."""
    (root / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (root / "a" / f"f{i:02d}").write_text(f"record {i}")
    for i in range(3):
        (root / "a" / "b" / f"g{i}").write_text(f"deep {i}")
    (root / "a" / "big").write_bytes(os.urandom(2 << 20))
    with open(os.fsencode(root / "a") + b"/caf\xe9", "wb") as f:
        f.write(b"latin-1 name")
    os.symlink("/etc/shadow", root / "a" / "link")
    os.mkfifo(root / "a" / "fifo")
    return 47


def _rows(db: State) -> list[tuple[object, ...]]:
    return sorted(db.db.execute("SELECT * FROM files").fetchall())


def test_a_big_scan_reads_in_a_second_process_with_the_same_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past REMOTE_AFTER files a scan hands folders (names + descriptor) to its reader
    process in chunks: the baseline is the same row for row as one read in-process, and
    the process has ended when the scan returns."""
    from baomi.agent import reader, reads

    root = tmp_path / "r"
    entries = _tree_for_reader(root)
    started: list[reader.Reader] = []

    class Counted(reader.Reader):
        def __init__(self, algorithm: str, max_bytes: int) -> None:
            super().__init__(algorithm, max_bytes)
            started.append(self)

    monkeypatch.setattr(reads, "REMOTE_AFTER", 5)
    monkeypatch.setattr(reader, "CHUNK", 7)
    monkeypatch.setattr(reads, "Reader", Counted)
    here, there = State(tmp_path / "here.db"), State(tmp_path / "there.db")
    a = Scanner(here, "sha256", 1 << 30, remote=False).scan(str(root), lambda ch: None)
    b = Scanner(there, "sha256", 1 << 30).scan(str(root), lambda ch: None)
    assert (a.files, a.hashed, a.errors) == (entries, entries - 2, [])
    assert (b.files, b.hashed, b.errors) == (a.files, a.hashed, [])
    assert len(started) == 1 and started[0].proc.poll() is not None
    assert _rows(here) == _rows(there)


def test_a_reader_killed_mid_scan_loses_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the reader: what it had not answered is a scan error (never a "deleted"
    finding), the rest of the scan reads in-process, and the next scan reads what was left."""
    import signal

    from baomi.agent import reader, reads

    root = tmp_path / "r"
    entries = _tree_for_reader(root)

    class Killed(reader.Reader):
        calls = 0

        def answer(self) -> list[reader.Answer]:
            Killed.calls += 1
            if Killed.calls == 2:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            return super().answer()

    monkeypatch.setattr(reads, "REMOTE_AFTER", 5)
    monkeypatch.setattr(reader, "CHUNK", 4)
    monkeypatch.setattr(reader, "PENDING", 1)
    monkeypatch.setattr(reads, "Reader", Killed)
    db = State(tmp_path / "s.db")
    changes: list[Change] = []
    first = Scanner(db, "sha256", 1 << 30).scan(str(root), changes.extend)
    assert any("scan reader process ended" in e for e in first.errors)
    assert all(c.new is not None for c in changes)  # nothing reported gone
    assert 0 < first.files < entries
    changes.clear()
    second = Scanner(db, "sha256", 1 << 30).scan(str(root), changes.extend)
    assert second.errors == [] and second.files == entries
    assert len(changes) == entries - first.files  # exactly the files left unread
    assert all(c.old is None for c in changes)


# --- the command line: bad input is one line ------------------------------------------------

def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from baomi.agent.cli import agent

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"agent:\n  spool_dir: {tmp_path}/spool\n")
    state = tmp_path / "state"
    runner = CliRunner()
    bad_url = runner.invoke(agent, ["enroll", "--collector", "http://collector:8443", "--token",
                                    "bme_x", "--policy", str(policy), "--state-dir", str(state)])
    assert bad_url.exit_code == 2
    assert bad_url.output.strip().splitlines() == [
        "--collector: collector URL 'http://collector:8443': expected https://HOST[:PORT]"]
    state.mkdir()
    (state / "enrolment.json").write_text("{not json")
    damaged = runner.invoke(agent, ["status", "--state-dir", str(state)])
    assert damaged.exit_code == 2
    (line,) = damaged.output.strip().splitlines()
    assert line.startswith(f"{state}/enrolment.json: damaged enrolment")
    assert "baomi agent enroll" in line
    refused = runner.invoke(agent, ["enroll", "--collector", "https://127.0.0.1:1", "--token",
                                    "bme_x", "--policy", str(policy), "--state-dir",
                                    str(tmp_path / "new")])
    assert refused.exit_code == 1
    (line,) = refused.output.strip().splitlines()
    assert line.startswith("enrolment failed: https://127.0.0.1:1: ConnectionRefusedError")


def test_events_fit_the_collectors_limits_whatever_the_file_names() -> None:
    long_path = "/data/top/" + "d" * 3000
    odd = os.fsdecode(b"/data/top/\xff\xfe-name")
    f = Finding("agent.drift.created", ("R-FIM",), "critical", long_path, "absent",
                "created " + "x" * 5000, {"moved_from": odd, "blob": "y" * 20000})
    ev = event("finding", finding=f.as_dict())["finding"]
    assert len(ev["subject"]) == 1024 and ev["subject"].startswith("/data/top/ddd")
    assert len(ev["found"]) <= 4096 and ev["details"] == {"truncated": True}
    other = event("finding", finding={**f.as_dict(), "subject": long_path + "e"})["finding"]
    assert other["subject"] != ev["subject"]  # the digest keeps long subjects apart
    named = event("finding", finding={**f.as_dict(), "subject": odd, "details": {}})["finding"]
    assert named["subject"] == "/data/top/\\xff\\xfe-name"
    named["subject"].encode("utf-8")  # valid UTF-8 for the collector's JSON and database


def test_the_baseline_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    odd = os.fsencode(root) + b"/\xff-record"
    with open(odd, "wb") as out:
        out.write(b"x")
    db = State(tmp_path / "state.db")
    scanner = Scanner(db, "sha256", 1 << 30, workers=2)
    changes: list[Change] = []
    scanner.scan(str(root), changes.extend)
    assert os.fsdecode(odd) in {c.path for c in changes}
    assert db.get(os.fsdecode(odd)) is not None
    db.update_open([(os.fsdecode(odd), "sensitive_paths.file_mode", "0644")], [])
    assert db.open_findings(os.fsdecode(odd)) == {"sensitive_paths.file_mode": "0644"}
    changes.clear()
    os.unlink(odd)
    scanner.scan(str(root), changes.extend)
    assert [c.path for c in changes if c.new is None] == [os.fsdecode(odd)]
    scanner.close()


def test_the_walk_never_follows_a_folder_swapped_for_a_link(tmp_path: Path) -> None:
    from baomi.agent.scan import ScanStats

    real = tmp_path / "real"
    real.mkdir()
    st = os.stat(real)
    stats = ScanStats(str(tmp_path))
    fd = Scanner._open_dir(str(tmp_path), str(real), (st.st_dev, st.st_ino), stats)
    assert fd is not None
    os.close(fd)
    (tmp_path / "other").mkdir()
    seen = (st.st_dev, st.st_ino)
    assert Scanner._open_dir(str(tmp_path), str(tmp_path / "other"), seen, stats) is None
    (tmp_path / "link").symlink_to("/")
    link = str(tmp_path / "link")
    assert Scanner._open_dir(str(tmp_path), link, None, stats) is None  # not a folder
    assert [e.split(": ", 1)[1] for e in stats.errors] == [
        "replaced while it was scanned; not followed"]


def test_a_file_behind_a_folder_swapped_for_a_link_is_never_read(tmp_path: Path) -> None:
    """The re-hash of one path walks from its sensitive path with openat and O_NOFOLLOW: a
    folder replaced by a link to a secret is reported (Swapped), the secret never hashed."""
    from baomi.agent.files import Swapped, observe_under

    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (root / "team" / "shadow").write_text("watched\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_text("the secret\n")
    before = observe_under(str(root), str(root / "team" / "shadow"))
    assert before is not None and before.kind == "f"
    (root / "team").rename(root / "team.old")
    (root / "team").symlink_to(secret)
    with pytest.raises(Swapped) as caught:
        observe_under(str(root), str(root / "team" / "shadow"))
    assert caught.value.folder == str(root / "team")
    assert caught.value.now == f"a symbolic link to {secret}"
    link = observe_under(str(root), str(root / "team"))
    assert link is not None and link.kind == "l" and link.digest is None
    (root / "team").unlink()
    (root / "team").write_text("a file now\n")
    assert observe_under(str(root), str(root / "team" / "shadow")) is None  # gone


def test_fanotify_records_are_parsed_in_order() -> None:
    from baomi.agent.actors import EVENT, FAN_CLOSE_WRITE, FAN_MODIFY, parse, under

    raw = (EVENT.pack(EVENT.size, 3, 0, EVENT.size, FAN_MODIFY, 7, 1234)
           + EVENT.pack(EVENT.size, 3, 0, EVENT.size, FAN_CLOSE_WRITE, 8, 99) + b"\0" * 5)
    assert parse(raw) == [(FAN_MODIFY, 7, 1234), (FAN_CLOSE_WRITE, 8, 99)]
    assert under("/srv/data/a", ["/srv/data"]) and not under("/srv/database/a", ["/srv/data"])
