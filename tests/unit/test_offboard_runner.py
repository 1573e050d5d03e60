"""Root's offboarding runner (collector/offboard_runner.py) on a real SQLite file: it takes
queued requests once, judges every row again (a forged row is refused on every host), runs
one child per fleet host with a fixed command line, writes each host's outcome, and claims the
day's purge once; its unit files; the dashboard queuing instead of running in that mode."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from baomi import fleet_access as fleet
from baomi.collector import auditlog
from baomi.collector.db import Database
from baomi.collector.offboard_runner import Runner
from baomi.collector.store import Principal
from baomi.collector.web import offboard_core as oc
from baomi.policy import load_text

TODAY = datetime.now(UTC).date()
POLICY = load_text("offboarding:\n  protected_accounts: [root, backup-admin]\n")
GOOD = {"id": 1, "user": "leaver", "ticket": "HR-1", "reason": "resigned",
        "effective": TODAY.isoformat(), "created_by": "hr1"}

# A stand-in for `baomi offboard ... --limit=HOST --json`: records its argv, answers per host.
FAKE = """
import json, sys
args = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as f:
    f.write(json.dumps(args) + "\\n")
host = next((a.split("=", 1)[1] for a in args if a.startswith("--limit=")), None)
if host is None:
    print(json.dumps({"events": [{"state": "deleted"}]}))
elif host == "srv3":
    print("connection refused", file=sys.stderr); sys.exit(1)
else:
    print(json.dumps({"hosts": {host: {"state": "frozen", "done": ["lock"], "already": []}}}))
"""


@pytest.mark.parametrize(("change", "said"), [
    ({"user": "root"}, "root is never offboarded"),
    ({"user": "backup-admin"}, "protected account"),
    ({"user": "../x"}, "is not a valid user name"),
    ({"user": "-rf"}, "is not a valid user name"),
    ({"user": "alice\nroot"}, "is not a valid user name"),
    ({"user": "baomi-retired-1001"}, "placeholder"),
    ({"effective": (TODAY + timedelta(days=1)).isoformat()}, "in the future"),
    ({"effective": (TODAY - timedelta(days=40)).isoformat()}, "days ago"),
    ({"effective": "yesterday"}, "is not a date"),
    ({"ticket": ""}, "ticket"),
    ({"reason": "x\x00--force"}, "NUL"),
    ({"user": 7}, "not text"),
    ({"created_by": "hr1\n--force"}, "created_by"),
])
def test_the_runner_refuses_a_forged_row(change: dict[str, Any], said: str) -> None:
    reason = oc.recheck({**GOOD, **change}, POLICY, TODAY)
    assert reason is not None and said in reason, reason


def test_a_good_row_passes() -> None:
    assert oc.recheck(GOOD, POLICY, TODAY) is None


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "collector"
    where.mkdir()
    url = f"sqlite:///{where / 'c.db'}"
    (where / "collector.toml").write_text(f'listen = "127.0.0.1:8443"\ndatabase = "{url}"\n'
                                          "purge_hour = 3\n")
    monkeypatch.delenv("BAOMI_COLLECTOR_DB", raising=False)
    db = Database(url)
    db.migrate()
    db.close()
    return where


class FakeRunner(Runner):
    def __init__(self, folder: Path, tmp: Path) -> None:
        (tmp / "inventory.py").write_text(
            "all = [('srv1', {}), ('srv2', {}), ('srv3', {})]\n")
        (tmp / "policy.yaml").write_text("offboarding:\n  protected_accounts: [root]\n")
        self.fake = tmp / "fake_baomi.py"
        self.fake.write_text(FAKE)
        super().__init__(folder, str(tmp / "inventory.py"), str(tmp / "policy.yaml"),
                         str(tmp / "state"), str(tmp / "ca.pem"))

    def argv(self, *args: str) -> list[str]:
        real = super().argv(*args)
        assert real[:4] == [sys.executable, "-m", "baomi", "offboard"]
        return [sys.executable, str(self.fake), *real[4:]]

    def calls(self) -> list[list[str]]:
        path = Path(f"{self.fake}.calls")
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _db(folder: Path) -> Database:
    return Database(f"sqlite:///{folder / 'c.db'}")


def _queue(folder: Path, user: str = "leaver", day: date = TODAY) -> int:
    db = _db(folder)
    try:
        return int(db.transaction(lambda tx: oc.add_request(
            tx, user, "HR-7", "-resigned", day, Principal("hr", "hr1"), [], state="queued")))
    finally:
        db.close()


def _request(folder: Path, rid: int) -> dict[str, Any]:
    db = _db(folder)
    try:
        return dict(db.transaction(lambda tx: oc.get_request(tx, rid)))
    finally:
        db.close()


def test_queued_requests_run_per_fleet_host_and_a_forged_one_is_refused(
        folder: Path, tmp_path: Path) -> None:
    good = _queue(folder)
    # A forged row: a user the form would refuse, with hosts of its own choosing.
    db = _db(folder)
    try:
        def forge(tx: Any) -> int:
            tx.run("INSERT INTO offboard_requests (user_name, ticket, reason, effective, created,"
                   " created_by, state) VALUES ('root', 'T', 'R', ?, 0, 'mallory', 'queued')",
                   (TODAY.isoformat(),))
            rid = int(tx.one("SELECT MAX(id) FROM offboard_requests")[0])
            tx.run("INSERT INTO offboard_hosts (request_id, host, state, detail, updated) "
                   "VALUES (?, 'evil;host', 'queued', '', 0)", (rid,))
            return rid
        forged = int(db.transaction(forge))
    finally:
        db.close()
    runner = FakeRunner(folder, tmp_path)
    (folder / fleet.OFFBOARD_TRIGGER).write_text("x")
    runner.run(datetime.combine(TODAY, datetime.min.time(), UTC).replace(hour=1))
    assert not (folder / fleet.OFFBOARD_TRIGGER).exists()  # removed before looking
    got = _request(folder, good)
    assert got["state"] == "pending", got  # srv3 unreachable
    assert {h["host"]: h["state"] for h in got["hosts"]} == {
        "srv1": "frozen", "srv2": "frozen", "srv3": "failed"}
    assert "connection refused" in got["hosts"][2]["detail"]
    bad = _request(folder, forged)
    assert bad["state"] == "refused"
    assert [h["host"] for h in bad["hosts"]] == ["srv1", "srv2", "srv3"]  # never evil;host
    assert all("root is never offboarded" in h["detail"] for h in bad["hosts"])
    calls = runner.calls()
    assert len(calls) == 3 and all(c[0] == "leaver" for c in calls)  # nothing ran for root
    (srv1,) = [c for c in calls if "--limit=srv1" in c]  # runs end in any order
    assert srv1[1:] == ["--ticket=HR-7", "--reason=-resigned",
                            f"--effective={TODAY.isoformat()}", "--limit=srv1",
                            "--operator=hr1 (dashboard)",
                            f"--inventory={tmp_path / 'inventory.py'}",
                            f"--policy={tmp_path / 'policy.yaml'}", "--json"]
    db = _db(folder)
    try:
        logged = [(x["actor"], x["action"]) for x in db.transaction(auditlog.rows)]
        assert (oc.RUNNER, "offboarding.refused") in logged
        assert db.transaction(auditlog.check)["ok"] is True
    finally:
        db.close()
    # Before purge_hour no purge; a second run finds nothing queued.
    runner.run(datetime.combine(TODAY, datetime.min.time(), UTC).replace(hour=1))
    assert len(runner.calls()) == 3


def test_the_purge_runs_once_a_day_from_the_hour(folder: Path, tmp_path: Path) -> None:
    runner = FakeRunner(folder, tmp_path)
    at = datetime.combine(TODAY, datetime.min.time(), UTC)
    assert runner.purge(at.replace(hour=2), 3, 8443) is None
    said = runner.purge(at.replace(hour=4), 3, 8443)
    assert said is not None and "ok (deleted: 1)" in said
    assert runner.purge(at.replace(hour=5), 3, 8443) is None  # claimed already
    (call,) = runner.calls()
    assert call[:2] == ["--purge-due", f"--now={TODAY.isoformat()}"]


def test_a_request_left_running_by_a_killed_runner_becomes_pending(folder: Path) -> None:
    rid = _queue(folder)
    db = _db(folder)
    try:
        assert db.transaction(lambda tx: oc.claim_next(tx, ["srv1"]))["id"] == rid
        assert db.transaction(lambda tx: oc.claim_next(tx, ["srv1"])) is None  # taken once
        assert db.transaction(lambda tx: oc.stale(tx, 0)) == 0  # fresh: another runner's
        assert db.transaction(lambda tx: oc.stale(tx, 2e10)) == 1
    finally:
        db.close()
    got = _request(folder, rid)
    assert got["state"] == "pending" and "interrupted" in got["hosts"][0]["detail"]


def test_the_units_start_a_fixed_command_on_a_trigger_and_a_timer() -> None:
    service = fleet.offboard_service_text("/opt/baomi/collector", "/var/lib/baomi-collector",
                                          "/etc/baomi/collector/database.env")
    assert ("ExecStart=/opt/baomi/collector/bin/python -m baomi.collector.offboard_runner "
            "/var/lib/baomi-collector\n") in service
    assert "ReadWritePaths=/var/lib/baomi-offboard /var/lib/baomi-collector" in service
    assert "NoNewPrivileges=yes" in service and "Type=oneshot" in service
    path = fleet.offboard_path_text("/var/lib/baomi-collector")
    assert "PathExists=/var/lib/baomi-collector/offboard.trigger" in path
    assert "Unit=baomi-offboard.service" in path
    assert "OnCalendar=*:0/15" in fleet.offboard_timer_text()


def test_with_the_runner_the_dashboard_queues_and_wakes_it(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``BAOMI_OFFBOARD_RUNNER=systemd``: the form's checks, then a queued row without hosts
    and the trigger file; nothing is run by the service, no purge scheduled, and a restart of
    the service does not mark the runner's requests interrupted."""
    import asyncio
    from types import SimpleNamespace

    from baomi.collector.config import load
    from baomi.collector.validate import Invalid
    from baomi.collector.web.offboard import Offboarding

    (tmp_path / "web-policy.yaml").write_text("offboarding:\n  protected_accounts: [root, ops]\n")
    monkeypatch.setenv("BAOMI_OFFBOARD_RUNNER", "systemd")
    monkeypatch.setenv("BAOMI_OFFBOARD_POLICY", str(tmp_path / "web-policy.yaml"))
    db = _db(folder)
    web = Offboarding(load(folder), db)
    v = SimpleNamespace(lang="en", who=Principal("hr", "hr1"))
    form = {"user": "leaver", "ticket": "HR-9", "reason": "resigned"}

    async def scenario() -> tuple[Any, list[str]]:
        async with web.running():
            assert web.problem() is None and not web.tasks  # no purge loop in the service
            answer = await web.create(db, v, None, form)  # type: ignore[arg-type]
            refused = []
            for user in ("ops", "../x"):
                try:
                    await web.create(db, v, None, {**form, "user": user})  # type: ignore[arg-type]
                except Invalid as exc:
                    refused.append(exc.message)
            return answer, refused

    try:
        answer, refused = asyncio.run(scenario())
        assert answer.status_code == 303 and answer.headers["location"] == "/offboarding/1"
        assert "protected account" in refused[0] and "not a valid user name" in refused[1]
        got = db.transaction(lambda tx: oc.get_request(tx, 1))
        assert got["state"] == "queued" and got["hosts"] == []
        assert (folder / fleet.OFFBOARD_TRIGGER).exists()
        asyncio.run(_restart(web))
        assert db.transaction(lambda tx: oc.get_request(tx, 1))["state"] == "queued"
    finally:
        db.close()


async def _restart(web: Any) -> None:
    async with web.running():
        pass
