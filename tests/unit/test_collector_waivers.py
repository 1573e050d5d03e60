"""Waivers on the collector's findings (baomi/collector/waiving.py): decided at read time by
``baomi.waivers.decide`` for today, the same decision as the audit's ``results.record``; the
store's lists, counts and the ``waived`` filter on SQLite; reload and one-line errors."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from baomi.collector import store, validate
from baomi.collector.db import Database
from baomi.collector.waiving import NO_WAIVERS, Judge, WaiverError, Waivers
from baomi.controls.contract import Check, Result
from baomi.policy import load_text
from baomi.results import record

TODAY = dt.date(2026, 12, 2)
POLICY_TEXT = textwrap.dedent("""\
    waivers:
      - control: usb
        hosts: [workstations]
        reason: the scanner needs a stick
        approver: 王经理
        expires: 2026-12-02
      - clause: R-TLS
        hosts: [srv2]
        reason: legacy client
        approver: 李总
        expires: 2026-11-30
    """)
POLICY = load_text(POLICY_TEXT, "p.yaml", today=TODAY)
GROUPS = {"ws1": frozenset({"workstations"}), "srv2": frozenset({"servers"})}
USB = Check("usb.rules", ("R-USB", "R-DEV"), "rules equal the policy's")
SSH = Check("ssh.ciphers", ("R-TLS",), "only approved ciphers")


def _finding(host: str, check: Check, state: str = "open") -> dict[str, object]:
    return {"host": host, "check": check.id, "clauses": list(check.clauses), "state": state}


def test_a_live_waiver_marks_the_finding_with_approver_and_expiry() -> None:
    f = Judge(POLICY, GROUPS, TODAY).mark(_finding("ws1", USB))
    assert f["waived"] is True
    assert f["waiver"] == {"index": 0, "clause": None, "control": "usb",
                           "hosts": ["workstations"], "reason": "the scanner needs a stick",
                           "approver": "王经理", "expires": "2026-12-02", "expired": False}


def test_the_day_after_the_same_row_is_no_longer_waived() -> None:
    tomorrow = Judge(POLICY, GROUPS, TODAY + dt.timedelta(days=1))
    f = tomorrow.mark(_finding("ws1", USB))
    assert f["waived"] is False and f["waiver"]["expired"] is True


def test_an_expired_waiver_says_so_and_nothing_else_is_marked() -> None:
    judge = Judge(POLICY, GROUPS, TODAY)
    f = judge.mark(_finding("srv2", SSH, "acknowledged"))
    assert f["waived"] is False and f["waiver"]["expired"] is True
    assert f["waiver"]["approver"] == "李总" and f["waiver"]["expires"] == "2026-11-30"
    assert judge.mark(_finding("ws1", USB, "resolved")) == {**_finding("ws1", USB, "resolved"),
                                                            "waived": False, "waiver": None}
    assert judge.mark(_finding("srv1", USB))["waiver"] is None  # not covered
    # Without the inventory's groups, a waiver naming a group covers nobody.
    assert Judge(POLICY, {}, TODAY).mark(_finding("ws1", USB))["waiver"] is None
    assert NO_WAIVERS.mark(_finding("ws1", USB))["waived"] is False


@pytest.mark.parametrize("host, check, day", [
    ("ws1", USB, TODAY), ("ws1", USB, TODAY + dt.timedelta(days=1)), ("srv2", SSH, TODAY),
    ("srv1", USB, TODAY), ("srv2", SSH, dt.date(2026, 11, 30))])
def test_the_collector_and_the_audit_agree(host: str, check: Check, day: dt.date) -> None:
    """The same failing check on the same host and day: the audit's record and the
    collector's finding carry the same waiver and the same waived/expired status."""
    failing = Result(check.control, host, (check,),
                     (check.finding("subject", "want", "got"),), {}, {})
    audited = record(failing, check, POLICY, GROUPS.get(host, ()), day)
    collected = Judge(POLICY, GROUPS, day).mark(_finding(host, check))
    assert (audited.status == "waived") == collected["waived"]
    assert audited.waiver == collected["waiver"]


def _event(seq: int, host_check: tuple[str, Check], kind: str = "finding") -> dict[str, object]:
    _, check = host_check
    return {"id": str(uuid.uuid4()), "seq": seq, "ts": "2026-12-02T10:00:00+00:00",
            "kind": kind, "finding": {"check": check.id, "control": check.control,
                                      "clauses": list(check.clauses), "severity": "high",
                                      "subject": f"{check.id} s", "expected": "a",
                                      "found": "b"}}


def _ingest(db: Database, host: str, checks: list[Check]) -> None:
    def made(tx: store.Tx) -> dict[str, object]:
        token = store.new_enrol_token(tx, "it", host, True, None)["token"]
        return store.enroll(tx, str(token), host)

    agent = db.transaction(made)
    batch = validate.parse_batch({"events": [_event(i + 1, (host, c))
                                             for i, c in enumerate(checks)]})
    db.transaction(lambda tx: store.ingest(tx, int(agent["agent_id"]), batch, 1.0))


def test_store_lists_counts_and_filters_by_waived_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        db.migrate()
        _ingest(db, "ws1", [USB, SSH])
        _ingest(db, "srv2", [SSH])
        judge = Judge(POLICY, GROUPS, TODAY)

        def find(**params: str) -> dict[str, object]:
            q = validate.finding_query(params)
            return db.transaction(lambda tx: store.find(tx, q, judge))

        every = find()["findings"]
        assert {(f["host"], f["check"], f["waived"]) for f in every} == {
            ("ws1", "usb.rules", True), ("ws1", "ssh.ciphers", False),
            ("srv2", "ssh.ciphers", False)}
        waived = find(waived="true")
        assert [(f["host"], f["check"]) for f in waived["findings"]] == [("ws1", "usb.rules")]
        assert waived["next"] is None
        # Paging over the filter: one per page, `next` continues after the last one shown.
        first = find(waived="false", limit="1")
        assert len(first["findings"]) == 1 and first["next"] == first["findings"][0]["id"]
        second = find(waived="false", limit="1", after=str(first["next"]))
        assert len(second["findings"]) == 1 and second["next"] is None
        with pytest.raises(validate.Invalid, match="query waived"):
            validate.finding_query({"waived": "maybe"})

        hosts = {h["host"]: h for h in db.transaction(lambda tx: store.hosts(tx, judge))}
        assert hosts["ws1"]["waived"] == 1 and hosts["ws1"]["open"]["high"] == 1
        assert hosts["srv2"]["waived"] == 0 and hosts["srv2"]["open"]["high"] == 1
        summary = db.transaction(lambda tx: store.summary(tx, judge))
        usb = next(c for c in summary["by_clause"] if c["clause"] == "R-USB")
        assert usb["hosts_failing"] == 0 and usb["waived"] == 1 and usb["open"] == 0
        ws1 = next(h for h in summary["by_host"] if h["host"] == "ws1")
        assert ws1["failing_clauses"] == ["R-TLS"] and ws1["waived"] == 1
        # Without waivers the same rows count as before (backward compatible).
        plain = db.transaction(store.summary)
        assert next(c for c in plain["by_clause"] if c["clause"] == "R-USB")["hosts_failing"] == 1
    finally:
        db.close()


def test_waivers_reload_when_the_policy_changes_and_keep_the_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.yaml"
    inventory = tmp_path / "inventory.py"
    policy.write_text(POLICY_TEXT)
    inventory.write_text('workstations = ["ws1"]\nservers = ["srv2"]\n')
    w = Waivers(str(policy), str(inventory), clock=lambda: TODAY)
    w.check()
    assert w.judge().mark(_finding("ws1", USB))["waived"] is True
    policy.write_text(POLICY_TEXT.replace("hosts: [workstations]", "hosts: [ws9]"))
    os.utime(policy, ns=(1, 1))
    assert w.judge().mark(_finding("ws1", USB))["waiver"] is None  # reloaded
    policy.write_text("waivers: [oops\n")
    os.utime(policy, ns=(2, 2))
    assert w.judge().policy is not None  # the last good one is kept
    assert "policy for waivers" in caplog.text and "Traceback" not in caplog.text
    assert Waivers("").judge() is NO_WAIVERS


def test_a_bad_policy_or_inventory_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("waivers:\n  - control: usb\n")
    with pytest.raises(WaiverError) as err:
        Waivers(str(bad)).check()
    assert len(str(err.value).splitlines()) == 1 and "bad.yaml" in str(err.value)
    good = tmp_path / "good.yaml"
    soon = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)).isoformat()
    good.write_text(POLICY_TEXT.replace("2026-12-02", soon))
    with pytest.raises(WaiverError, match="inventory for waivers' groups"):
        Waivers(str(good), str(tmp_path / "none.py")).check()


# ---- The deploy's host → groups map (BAOMI_COLLECTOR_GROUPS, waiver_groups) -----------------

def _groups_map(tmp_path: Path, groups: dict[str, list[str]]) -> Path:
    from baomi.fleet_access import groups_map_text

    path = tmp_path / "collector-groups.json"
    path.write_text(groups_map_text(groups), encoding="utf-8")
    return path


def test_the_groups_map_loads_and_a_group_waiver_waives_through_it(tmp_path: Path) -> None:
    from baomi.collector.waiving import load_groups, load_groups_map

    groups = _groups_map(tmp_path, {"ws1": ["workstations"], "srv2": ["servers"]})
    assert load_groups_map(str(groups)) == GROUPS
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)
    # The map wins over an inventory (the deployed collector cannot read root's).
    w = Waivers(str(policy), str(tmp_path / "unreadable.py"), str(groups), clock=lambda: TODAY)
    w.check()
    judge = w.judge()
    assert judge.groups == GROUPS
    f = judge.mark(_finding("ws1", USB))  # `hosts: [workstations]`: ws1 by its group
    assert f["waived"] is True and f["waiver"]["hosts"] == ["workstations"]
    assert judge.mark(_finding("srv2", USB))["waived"] is False  # not a workstation
    # The same decision as the audit's record for that host and its groups.
    failing = Result(USB.control, "ws1", (USB,), (USB.finding("subject", "want", "got"),), {},
                     {})
    audited = record(failing, USB, POLICY, {"workstations"}, TODAY)
    assert audited.status == "waived" and audited.waiver == f["waiver"]
    # Without the map (host names only), the group waiver does not reach ws1.
    assert Waivers(str(policy), clock=lambda: TODAY).judge().mark(
        _finding("ws1", USB))["waived"] is False
    assert load_groups("", "") == {}


@pytest.mark.parametrize(("text", "said"), [
    ("{not json", "not JSON"),
    ('["ws1", "workstations"]', "expected an object of host name"),
    ('{"ws1": "workstations"}', "host 'ws1': expected a list of group names"),
    ('{"ws1": ["workstations", 3]}', "host 'ws1': expected a list of group names"),
])
def test_a_malformed_groups_map_is_one_line(tmp_path: Path, text: str, said: str) -> None:
    policy = tmp_path / "policy.yaml"
    soon = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)).isoformat()
    policy.write_text(POLICY_TEXT.replace("2026-12-02", soon))
    groups = tmp_path / "groups.json"
    groups.write_text(text)
    with pytest.raises(WaiverError) as err:
        Waivers(str(policy), groups=str(groups)).check()
    message = str(err.value)
    assert len(message.splitlines()) == 1 and message.startswith(
        f"groups for waivers: {groups}: ") and said in message, message
    with pytest.raises(WaiverError, match=r"groups for waivers: .*none\.json: cannot read it"):
        Waivers(str(policy), groups=str(tmp_path / "none.json")).check()


def test_the_groups_map_reloads_when_it_changes_and_keeps_the_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)
    groups = _groups_map(tmp_path, {"ws1": ["workstations"]})
    w = Waivers(str(policy), groups=str(groups), clock=lambda: TODAY)
    w.check()
    assert w.judge().mark(_finding("ws1", USB))["waived"] is True
    assert w.judge().mark(_finding("ws2", USB))["waived"] is False
    _groups_map(tmp_path, {"ws1": ["servers"], "ws2": ["workstations"]})
    os.utime(groups, ns=(1, 1))
    judge = w.judge()  # reloaded: ws2 joined the workstations, ws1 left them
    assert judge.mark(_finding("ws2", USB))["waived"] is True
    assert judge.mark(_finding("ws1", USB))["waived"] is False
    groups.write_text('{"ws1": "oops"}')
    os.utime(groups, ns=(2, 2))
    kept = w.judge()
    assert kept.groups == {"ws1": {"servers"}, "ws2": {"workstations"}}  # the last good one
    assert "groups for waivers" in caplog.text and "Traceback" not in caplog.text


def test_serve_takes_the_groups_map_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from baomi.collector.cli import _with_environment
    from baomi.collector.config import Config

    monkeypatch.setenv("BAOMI_COLLECTOR_GROUPS", "/etc/baomi/collector-groups.json")
    monkeypatch.setenv("BAOMI_COLLECTOR_POLICY", "/etc/baomi/collector-policy.yaml")
    config = _with_environment(Config(Path("/nonexistent")))
    assert config.waiver_groups == "/etc/baomi/collector-groups.json"
    assert config.policy == "/etc/baomi/collector-policy.yaml"
