"""The controller's record files: append-only 0600 JSON lines, damaged files named clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from baomi.controller.escrow import EscrowError, EscrowStore
from baomi.records import RecordError, append_jsonl, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_append_and_read(tmp_path: Path) -> None:
    path = tmp_path / "new" / "log.jsonl"
    append_jsonl(path, [{"a": 1}, {"b": "秘密"}])
    append_jsonl(path, [{"c": 3}])
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert read_jsonl(path) == [{"a": 1}, {"b": "秘密"}, {"c": 3}]
    with path.open("a") as out:
        out.write("[1, 2]\nnot json\n")
    assert read_jsonl(path) == [{"a": 1}, {"b": "秘密"}, {"c": 3}]
    with pytest.raises(RecordError, match=r"log.jsonl:4: not a JSON record"):
        read_jsonl(path, strict=True)
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(RecordError, match="cannot read the records"):
        read_jsonl(path)


def test_damaged_escrow_files_are_named(tmp_path: Path) -> None:
    store = EscrowStore(tmp_path / "escrow")
    store.keygen(tmp_path / "escrow.identity")
    store.put("luks-recovery", "vm1", "/dev/vdb", "s")
    with (tmp_path / "escrow" / "entries.jsonl").open("a") as out:
        out.write(json.dumps({"id": "x", "kind": "luks-recovery"}) + "\n")
    with pytest.raises(EscrowError, match="record 2 lacks created, host, sealed, subject"):
        store.entries()
    (tmp_path / "escrow" / "escrow.pub").write_bytes(b"short")
    with pytest.raises(EscrowError, match="not an escrow public key"):
        store.put("luks-recovery", "vm2", "/dev/vdb", "t")


def test_unreadable_ledger_is_a_clear_line(tmp_path: Path) -> None:
    ledger = tmp_path / "offboarding" / "ledger.jsonl"
    ledger.parent.mkdir()
    ledger.write_bytes(b'{"user": "\xff"}\n')
    result = subprocess.run([sys.executable, "-m", "baomi", "offboard", "--status"], cwd=ROOT,
                            env={"BAOMI_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{ledger}: cannot read the records" in result.stderr
    assert "internal error" not in result.stderr


def _writer(path: str, worker: int, count: int) -> None:
    for i in range(count):
        # Larger than PIPE_BUF, so without the lock two appends could interleave.
        append_jsonl(Path(path), [{"worker": worker, "i": i, "pad": "保" * 3000}])


def test_concurrent_writer_processes_never_interleave(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "ledger.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 60)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = read_jsonl(path, strict=True)
    assert len(records) == 360
    for w in range(6):
        assert [r["i"] for r in records if r["worker"] == w] == list(range(60))


def test_a_torn_line_is_sealed_off_and_reported(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ledger.jsonl"
    append_jsonl(path, [{"user": "alice", "state": "pending"}])
    with path.open("a") as out:
        out.write('{"user": "bob", "sta')  # a writer died mid-line
    append_jsonl(path, [{"user": "carol", "state": "pending"}])
    assert [r["user"] for r in read_jsonl(path)] == ["alice", "carol"]
    assert "ledger.jsonl:2: damaged record skipped" in capsys.readouterr().err
    with pytest.raises(RecordError, match=r"ledger.jsonl:2: not a JSON record"):
        read_jsonl(path, strict=True)


def test_loose_modes_are_tightened_and_links_refused(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    path = folder / "requests.jsonl"
    append_jsonl(path, [{"a": 1}])
    path.chmod(0o644)
    folder.chmod(0o755)
    append_jsonl(path, [{"a": 2}])
    assert path.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    victim = tmp_path / "victim"
    victim.write_text("")
    link = folder / "linked.jsonl"
    link.symlink_to(victim)
    with pytest.raises(RecordError, match="is a link"):
        append_jsonl(link, [{"a": 3}])
    with pytest.raises(RecordError, match="is a link"):
        read_jsonl(link)
    assert victim.read_text() == ""
