"""The collector as the system of record: escrow, ledger, account and wipe records through its
API (a real collector process over TLS, SQLite and PostgreSQL), used by two controllers.

Each "controller" is its own ``$BAOMI_STATE_DIR`` and escrow folder with its own ``baomi
login`` session and a policy saying ``collector.records: collector``; the commands run as a
user runs them (``python -m baomi``). Also here: the role matrix of these endpoints, the
hash-chained log's tamper tests (an edited line, a deleted line, a cut tail) and
``baomi collector import``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baomi.collector.db import Database
from tests.collector.conftest import Collector, StartCollector

API = "/api/v1"
PASSWORD = "correct horse 12"


@dataclass
class Controller:
    """One controller: its state dir, escrow dir, policy and baomi login session."""

    root: Path
    env: dict[str, str]

    def baomi(self, *args: str, stdin: str = "", ok: bool = True,
              ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "baomi", *args], input=stdin,
                              env=self.env, capture_output=True, text=True, timeout=120)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def in_process(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key in ("BAOMI_STATE_DIR", "BAOMI_ESCROW_DIR", "BAOMI_POLICY"):
            monkeypatch.setenv(key, self.env[key])


def person(collector: Collector, role: str, name: str | None = None) -> str:
    name = name or f"{role}{secrets.token_hex(3)}"
    made = collector.client(collector.it).post(f"{API}/users", {
        "user": name, "password": PASSWORD, "role": role})
    assert made.status == 201, made.body
    return name


def controller(collector: Collector, root: Path, user: str, records: str = "collector",
               password: str = PASSWORD) -> Controller:
    root.mkdir(parents=True)
    policy = root / "policy.yaml"
    policy.write_text(f'collector:\n  url: "https://127.0.0.1:{collector.port}"\n'
                      f"  records: {records}\n")
    env = dict(os.environ, BAOMI_STATE_DIR=str(root / "state"),
               BAOMI_ESCROW_DIR=str(root / "escrow"), BAOMI_POLICY=str(policy), COLUMNS="200")
    made = Controller(root, env)
    made.baomi("login", "--collector", f"https://127.0.0.1:{collector.port}", "--ca",
               collector.ca, "--user", user, "--password-stdin", stdin=password + "\n")
    return made


def database_text(collector: Collector) -> str:
    """Everything the collector's database holds, as text (SQLite file + WAL, or the rows)."""
    if collector.database is None:
        return b"".join(p.read_bytes() for p in collector.folder.glob("collector.db*")).decode(
            "utf-8", "replace")
    db = Database(collector.database)
    try:
        rows = db.read_only(lambda tx: tx.all("SELECT body FROM records") + tx.all(
            "SELECT detail FROM audit_log"))
    finally:
        db.close()
    return "\n".join(str(r[0]) for r in rows)


def test_two_controllers_share_escrow_ledger_and_requests(
        collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from baomi.controller.commands import offboard
    from baomi.controller.escrow import EscrowStore

    a = controller(collector, tmp_path / "a", person(collector, "it", "ann"))
    b = controller(collector, tmp_path / "b", person(collector, "it", "bob"))
    identity = tmp_path / "offline.identity"
    a.baomi("escrow", "keygen", "--identity", str(identity))
    assert identity.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "a" / "escrow" / "escrow.pub").exists()  # kept at the collector
    assert "already has a key pair" in b.baomi("escrow", "keygen", "--identity",
                                               str(tmp_path / "other"), ok=False).stderr
    assert not (tmp_path / "other").exists()

    # Controller A escrows a LUKS recovery secret (as the disk-encryption deploy does).
    a.in_process(monkeypatch)
    secret = "luks-" + secrets.token_hex(16)
    EscrowStore.default().put("luks-recovery", "vm1", "/dev/vdb", secret,
                              {"luks_uuid": "0d5e-uuid"})
    assert secret not in database_text(collector)  # ciphertext only, at rest
    # Controller B sees it: its disk-encryption deploy finds the volume's UUID escrowed.
    b.in_process(monkeypatch)
    entries = EscrowStore.default().entries()
    assert [(e["host"], e["subject"], e["meta"]["luks_uuid"]) for e in entries] == [
        ("vm1", "/dev/vdb", "0d5e-uuid")]
    assert "sealed" not in entries[0]
    listed = json.loads(b.baomi("escrow", "list", "--json").stdout)
    assert listed["store"] == f"https://127.0.0.1:{collector.port}"
    shown = b.baomi("escrow", "show", "vm1", "/dev/vdb", "--reason", "disk replaced",
                    "--identity", str(identity), "--operator", "bob.wang")
    assert shown.stdout.strip() == secret
    # An auditor's controller lists but never retrieves; HR does neither (one line each).
    auditor = controller(collector, tmp_path / "audit", person(collector, "auditor", "audrey"))
    assert "vm1" in auditor.baomi("escrow", "list").stdout
    refused = auditor.baomi("escrow", "show", "vm1", "/dev/vdb", "--reason", "curious",
                            "--identity", str(identity), ok=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "audrey (role auditor) may not POST /api/v1/escrow/retrieve" in refused.stderr
    assert refused.stdout == ""
    hr = controller(collector, tmp_path / "hr", person(collector, "hr", "harry"))
    listing = hr.baomi("escrow", "list", ok=False)
    assert listing.returncode == 1 and "harry (role hr) may not GET /api/v1/records/escrow" \
        in listing.stderr
    retrievals = collector.client(collector.it).get(f"{API}/records/escrow-retrievals").body
    (got,) = [r["record"] for r in retrievals["records"]]
    assert (got["collector_user"], got["operator"], got["reason"], got["host"]) == (
        "bob", "bob.wang", "disk replaced", "vm1")

    # Account requests: made on A, listed and revoked on B, gone on A.
    a.baomi("account", "request", "alice", "--requester", "head.li", "--approver", "vp.zhao",
            "--ticket", "HR-1")
    assert "alice\trequested by head.li\tapproved by vp.zhao" in b.baomi("account",
                                                                          "list").stdout
    b.baomi("account", "revoke", "alice", "--ticket", "HR-2", "--by", "head.li")
    assert "alice" not in a.baomi("account", "list").stdout

    # The ledger: a freeze recorded by A is B's status.
    a.in_process(monkeypatch)
    offboard.append([{"time": "2026-12-02T09:00:00Z", "action": "freeze", "user": "carol",
                      "host": "srv1", "state": "frozen", "ticket": "OFF-9",
                      "due": "2027-01-31"}])
    status = json.loads(b.baomi("offboard", "--status", "--json").stdout)
    assert status["carol"]["srv1"]["state"] == "frozen"

    # Wipe permissions (destruction on record): allowed on A, seen on B.
    a.baomi("disk", "allow-wipe", "vm1", "/dev/vdc", "--serial", "S123", "--ticket", "CHG-7")
    assert "S123" in b.baomi("disk", "permissions").stdout

    # Every write and the retrieval are in the log, which verifies from a terminal.
    lines = collector.client(collector.it).get(f"{API}/log").body["lines"]
    actions = [(line["actor"], line["action"]) for line in lines]
    assert ("admin", "user.add") in actions and ("bob", "login") in actions
    assert ("bob", "escrow.retrieve") in actions and ("ann", "escrow.append") in actions
    assert ("ann", "accounts.append") in actions and ("bob", "accounts.append") in actions
    verified = a.baomi("collector", "verify-log")
    assert "log intact" in verified.stdout


def test_roles_of_the_system_of_record(start_collector: StartCollector) -> None:
    c = start_collector("sqlite")
    tokens = {"it": c.it, "auditor": c.login(person(c, "auditor"), PASSWORD),
              "hr": c.login(person(c, "hr"), PASSWORD), "agent": c.enrol("ws-sr").credential}
    entry = {"id": "e1", "kind": "luks-recovery", "host": "vm1", "subject": "/dev/vdb",
             "created": "2026-12-02T10:00:00+00:00", "recipient": "f" * 32, "sealed": "QUJD"}
    it = c.client(c.it)
    assert it.post(f"{API}/records/escrow", {"records": [{"uid": "e1", "record": entry}]}
                   ).body == {"stored": 1, "existing": 0}
    retrieve = {"kind": "luks-recovery", "host": "vm1", "subject": "/dev/vdb",
                "reason": "test", "operator": {"operator": "x"}}
    # (method, path, body, roles allowed)
    matrix: list[tuple[str, str, Any, set[str]]] = [
        ("GET", f"{API}/records/escrow", None, {"it", "auditor"}),
        ("GET", f"{API}/records/escrow/e1", None, {"it", "auditor"}),
        ("GET", f"{API}/records/escrow-retrievals", None, {"it", "auditor"}),
        ("GET", f"{API}/records/offboarding", None, {"it", "auditor", "hr"}),
        ("GET", f"{API}/records/accounts", None, {"it", "auditor"}),
        ("GET", f"{API}/records/wipe", None, {"it", "auditor"}),
        ("POST", f"{API}/records/offboarding", {"records": [{"uid": "x1", "record": {}}]},
         {"it"}),
        ("POST", f"{API}/records/escrow", {"records": [{"uid": "e1", "record": entry}]},
         {"it"}),
        ("GET", f"{API}/escrow/recipient", None, {"it", "auditor"}),
        ("PUT", f"{API}/escrow/recipient", {"recipient": "bad"}, {"it"}),
        ("POST", f"{API}/escrow/retrieve", retrieve, {"it"}),
        ("GET", f"{API}/log", None, {"it", "auditor"}),
        ("GET", f"{API}/log/verify", None, {"it", "auditor"}),
    ]
    client = c.client()
    for method, path, body, allowed in matrix:
        answer = client.request(method, path, body, token="")
        assert answer.status == 401, (method, path, answer.status)
        for role, token in tokens.items():
            answer = client.request(method, path, body, token=token)
            if role in allowed:
                assert answer.status in (200, 201, 422), (method, path, role, answer.body)
            else:
                assert answer.status == 403, (method, path, role, answer.status, answer.body)
    # The auditor lists escrow entries but never gets a sealed secret; only `it` retrieves.
    listed = client.request("GET", f"{API}/records/escrow", token=tokens["auditor"]).body
    assert "sealed" not in listed["records"][0]["record"]
    assert "sealed" not in client.request("GET", f"{API}/records/escrow/e1",
                                          token=tokens["auditor"]).body["record"]
    assert client.request("POST", f"{API}/escrow/retrieve", retrieve,
                          token=c.it).body["entry"]["sealed"] == "QUJD"
    # Records are never rewritten; bad input is one line, nothing stored.
    other = dict(entry, sealed="WFla")
    refused = it.post(f"{API}/records/escrow", {"records": [{"uid": "e1", "record": other}]})
    assert refused.status == 409 and "already stored with other content" in refused.body["error"]
    for bad in ({"records": []}, {"records": [{"uid": "../x", "record": {}}]},
                {"records": [{"uid": "u", "record": dict(entry, sealed="")}]},
                {"records": [{"uid": "u", "record": []}]}):
        answer = it.post(f"{API}/records/escrow", bad)
        assert answer.status == 422 and answer.body["error"], (bad, answer.body)
    assert it.get(f"{API}/records/nonsense").status == 404


def _tamper(c: Collector, sql: str, params: tuple[Any, ...] = ()) -> None:
    db = Database(c.database or f"sqlite:///{c.folder}/collector.db")
    try:
        db.transaction(lambda tx: tx.run(sql, params))
    finally:
        db.close()


def _verify(c: Collector, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "baomi", "collector", "verify-log", str(c.folder)]
    if c.database:
        command += ["--db", c.database]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60)


def test_verify_log_detects_an_edited_and_a_deleted_line(collector: Collector) -> None:
    it = collector.client(collector.it)  # line 1: the admin's login
    for n in range(3):  # lines 2-4: ledger records
        sent = it.post(f"{API}/records/offboarding", {"records": [{"uid": f"l{n}", "record": {
            "user": "dave", "host": f"srv{n}", "state": "frozen",
            "time": "2026-12-02T10:00:00Z"}}]})
        assert sent.status == 200, sent.body
    # line 5: the user added, line 6: their login
    collector.login(person(collector, "auditor", "audrey"), PASSWORD)
    intact = _verify(collector)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "log intact: 6 lines" in intact.stdout
    head = intact.stdout.split("head ")[1].strip()

    # An edited line: the action's actor rewritten.
    _tamper(collector, "UPDATE audit_log SET actor = 'someone' WHERE seq = 3")
    edited = _verify(collector)
    assert edited.returncode == 1
    assert "TAMPERED: line 3: its content does not match its hash" in edited.stdout
    _tamper(collector, "UPDATE audit_log SET actor = 'admin' WHERE seq = 3")
    assert _verify(collector).returncode == 0

    # A record edited under its line is caught too.
    _tamper(collector, "UPDATE records SET body = replace(body, 'srv1', 'srv9') "
                       "WHERE uid = 'l1'")
    assert "record offboarding/l1: differs from what log line 3" in _verify(collector).stdout
    _tamper(collector, "UPDATE records SET body = replace(body, 'srv9', 'srv1') "
                       "WHERE uid = 'l1'")

    # A deleted line in the middle.
    _tamper(collector, "DELETE FROM audit_log WHERE seq = 2")
    deleted = _verify(collector)
    assert deleted.returncode == 1
    assert "TAMPERED: line 3: expected line 2 here" in deleted.stdout
    assert "record offboarding/l0: its log line 2 is missing" in deleted.stdout

    # The newest line cut off (a login, which no record points at): the noted head says so.
    _tamper(collector, "DELETE FROM audit_log WHERE seq = 6")
    cut = _verify(collector, "--head", head)
    assert cut.returncode == 1
    assert "the head noted earlier (line 6) is missing" in cut.stdout
    assert _verify(collector, "--head", "6:xyz").returncode == 2  # bad input: one line


def test_import_moves_local_records_verified_and_idempotent(
        start_collector: StartCollector, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from baomi.controller.escrow import EscrowStore

    c = start_collector("sqlite")
    old = controller(c, tmp_path / "old", "admin", records="local", password=c.admin_password)
    identity = tmp_path / "offline.identity"
    old.baomi("escrow", "keygen", "--identity", str(identity))
    old.in_process(monkeypatch)
    secrets_by_host = {f"srv{n}": secrets.token_hex(20) for n in range(3)}
    for host, value in secrets_by_host.items():
        EscrowStore.default().put("restic-password", host, "/srv/backup", value)
    old.baomi("escrow", "show", "srv0", "/srv/backup", "--kind", "restic-password", "--reason",
              "restore test", "--identity", str(identity))
    old.baomi("account", "request", "erin", "--requester", "head.li", "--approver", "vp.zhao")
    old.baomi("disk", "allow-wipe", "vm1", "/dev/vdc", "--serial", "S9", "--ticket", "CHG-1")
    state = tmp_path / "old" / "state"
    files = sorted(p for p in (tmp_path / "old").rglob("*.jsonl"))
    before = {p: p.read_bytes() for p in files}

    first = old.baomi("collector", "import")
    assert "escrow: 3 local, 3 stored, 0 already there, 3 verified" in first.stdout
    assert "escrow-retrievals: 1 local, 1 stored" in first.stdout
    assert "accounts: 1 local, 1 stored" in first.stdout and "wipe: 1 local, 1 stored" \
        in first.stdout
    again = old.baomi("collector", "import")
    assert "escrow: 3 local, 0 stored, 3 already there, 3 verified" in again.stdout
    assert {p: p.read_bytes() for p in files} == before  # the local records are only read

    # Halfway: a damaged local line stops the import, naming it; what came before is stored.
    ledger = state / "offboarding" / "ledger.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text('{"user": "finn", "host": "srv1", "state": "frozen", '
                      '"time": "2026-12-01T10:00:00Z"}\n{"user": "gail", "ho\n')
    broken = old.baomi("collector", "import", ok=False)
    assert broken.returncode == 1
    assert f"{ledger}:2: not a JSON record" in broken.stderr
    assert "the local records are unchanged" in broken.stderr
    ledger.write_text(ledger.read_text().splitlines()[0] + "\n")
    assert "offboarding: 1 local, 1 stored" in old.baomi("collector", "import").stdout

    # With the policy switched to the collector, the same commands read what was imported.
    (tmp_path / "old" / "policy.yaml").write_text(
        f'collector:\n  url: "https://127.0.0.1:{c.port}"\n  records: collector\n')
    shown = old.baomi("escrow", "show", "srv2", "/srv/backup", "--kind", "restic-password",
                      "--reason", "restore drill", "--identity", str(identity))
    assert shown.stdout.strip() == secrets_by_host["srv2"]
    assert "erin" in old.baomi("account", "list").stdout
    assert json.loads(old.baomi("offboard", "--status", "--json").stdout)["finn"]


def test_a_ledger_the_collector_cannot_take_is_kept_locally_then_imported(
        start_collector: StartCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The hosts are already frozen when the ledger is written: with the collector down, the
    lines go to the local ledger (said on stderr) and `baomi collector import` moves them."""
    from baomi.controller.commands import offboard
    from tests.collector.conftest import serve

    c = start_collector("sqlite")
    ctl = controller(c, tmp_path / "ctl", "admin", password=c.admin_password)
    ctl.in_process(monkeypatch)
    c.stop()
    offboard.append([{"time": "2026-12-02T09:00:00Z", "action": "freeze", "user": "hana",
                      "host": "srv1", "state": "frozen", "ticket": "OFF-3"}])
    assert "the collector did not take the ledger (cannot reach the collector" in \
        capsys.readouterr().err
    local = tmp_path / "ctl" / "state" / "offboarding" / "ledger.jsonl"
    assert json.loads(local.read_text())["user"] == "hana"
    again = serve(c.folder, c.admin_password, port=c.port)
    try:
        assert "offboarding: 1 local, 1 stored" in ctl.baomi("collector", "import").stdout
        status = json.loads(ctl.baomi("offboard", "--status", "--json").stdout)
        assert status["hana"]["srv1"]["state"] == "frozen"
    finally:
        again.stop()
