"""Offboarding's pure core: due dates, refusals, parsers on output captured from lab hosts,
compare (with its check IDs), the freeze/purge steps (baomi.fixes.offboarding), and the
controller's ledger fold."""

from __future__ import annotations

import base64
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baomi import offboarding as core
from baomi.controller.commands.offboard import fold
from baomi.controls import explain
from baomi.fixes import offboarding as fix
from baomi.policy import load, load_text

DATA = Path(__file__).parent / "data" / "offboarding"
POLICY = load_text("")
TICKET = fix.Ticket(ticket="HR-7", operator="hr-it", reason="left", effective=date(2026, 11, 23),
                     time="2026-11-23T09:00:00Z")


def facts(name: str, user: str = "dave") -> core.Facts:
    return core.parse(user, (DATA / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(("frozen", "due"), [
    ("2026-11-23", "2026-12-31"),   # the example
    ("2026-01-31", "2026-02-28"),   # from a 31st into a short month
    ("2026-01-01", "2026-02-28"),
    ("2024-01-31", "2024-02-29"),   # leap year
    ("2028-01-15", "2028-02-29"),
    ("2100-01-10", "2100-02-28"),   # divisible by 100: not a leap year
    ("2000-01-10", "2000-02-29"),   # divisible by 400: a leap year
    ("2026-12-01", "2027-01-31"),   # across the year end
    ("2026-12-31", "2027-01-31"),
    ("2026-02-28", "2026-03-31"),
    ("2026-03-31", "2026-04-30"),
    ("2026-07-31", "2026-08-31"),
    ("2026-08-31", "2026-09-30"),
])
def test_due_date_is_the_last_day_of_the_following_month(frozen: str, due: str) -> None:
    assert core.due_date(date.fromisoformat(frozen)) == date.fromisoformat(due)


@given(st.dates(min_value=date(1970, 1, 1), max_value=date(9998, 11, 30)))
def test_due_date_properties(day: date) -> None:
    due = core.due_date(day)
    assert (due + timedelta(days=1)).day == 1                      # a month's last day
    assert (due.year * 12 + due.month) - (day.year * 12 + day.month) == 1  # the next month
    assert due > day


@pytest.mark.parametrize("name", ["alice", "a.b", "_svc", "x-1", "A" * 32])
def test_valid_names(name: str) -> None:
    assert core.valid_name(name)
    assert core.refusal(POLICY, name) is None


@pytest.mark.parametrize("name", ["", "-rf", ".hidden", "a b", "a;reboot", "$(id)", "a/b",
                                  "ä", "A" * 33, "bob\n", "*"])
def test_invalid_names_are_refused_before_anything_runs(name: str) -> None:
    assert not core.valid_name(name)
    reason = core.refusal(POLICY, name)
    assert reason is not None and "not a valid POSIX user name" in reason
    with pytest.raises(ValueError):
        core.observe_script(name)


def test_refusals_root_protected_placeholder_and_connecting_user() -> None:
    assert core.refusal(POLICY, "root") == "root is never offboarded"
    policy = load_text("offboarding:\n  protected_accounts: [deploy, backup]\n")
    assert core.refusal(policy, "deploy") == \
        "deploy is a protected account (policy offboarding.protected_accounts)"
    assert "placeholder" in str(core.refusal(POLICY, "baomi-retired-1001"))
    assert core.refusal(POLICY, "ops", connect_user="ops") == \
        "ops is the account this deploy connects as (inventory ssh_user)"
    assert core.refusal(POLICY, "ops", connect_user="root") is None


def test_system_account_is_refused_on_the_host() -> None:
    daemon = facts("daemon_srv1.out", "daemon")
    assert daemon.account is not None and daemon.account.uid == 1
    assert core.host_refusal(POLICY, "daemon", daemon) == \
        "daemon is a system account (UID 1 < policy accounts.min_uid 1000)"
    stricter = load_text("accounts:\n  min_uid: 5000\n")
    dave = facts("before_srv2.out")
    assert "UID 1003 < policy accounts.min_uid 5000" in str(
        core.host_refusal(stricter, "dave", dave))
    assert core.host_refusal(POLICY, "dave", dave) is None


def test_parse_before_the_freeze() -> None:
    text = (DATA / "before_srv2.out").read_text(encoding="utf-8")
    assert "$y$" not in text and "$6$" not in text  # never the hash
    f = facts("before_srv2.out")
    assert f.account == core.Account("dave", 1003, 1003, "/home/dave", "/bin/bash")
    assert f.shadow is not None and f.shadow.status == "P"
    assert not f.shadow.locked and not f.shadow.expired
    assert f.primary_group == "dave" and f.groups == ("adm", "sudo")
    assert f.keys_files == (".ssh/authorized_keys", ".ssh/authorized_keys2")
    assert f.sudoers == ("/etc/sudoers.d/dave:1",)
    assert f.sudo_aliases == ("/etc/sudoers.d/dave:2",)
    assert f.crontabs == ("/var/spool/cron/crontabs/dave",)
    assert f.at_jobs == ("2",)
    assert len(f.processes) == 1
    assert f.systemd and not f.linger
    assert f.record is None and f.home_owner == 1003


def test_parse_after_the_freeze_and_compare_finds_nothing() -> None:
    f = facts("frozen_srv2.out")
    assert f.shadow is not None and f.shadow.locked and f.shadow.expired
    assert f.account is not None and f.account.shell == core.NOLOGIN
    assert f.groups == () and f.sudoers == () and f.crontabs == () and f.at_jobs == ()
    assert f.processes == ()
    assert f.record is not None
    assert f.record["ticket"] == "HR-3" and f.record["due"] == "2026-12-31"
    assert f.record["groups_removed"] == ["adm", "sudo"]   # the state before, as evidence
    assert f.record["shell"] == "/bin/bash"
    assert core.compare(f.record, f, (), date(2026, 12, 30)) == []
    overdue = core.compare(f.record, f, (), date(2026, 12, 31))
    assert [x.check for x in overdue] == ["offboarding.deleted_when_due"]
    assert [str(x) for x in overdue] == [
        "[R-OFF 离职帐号冻结与注销, R-RET 清退客户资料] dave: deletion: expected done by "
        "2026-12-31 (次月月底注销), found still frozen on 2026-12-31"]


def test_compare_names_every_open_door() -> None:
    before = facts("before_srv2.out")
    record = facts("frozen_srv2.out").record
    assert record is not None
    found = core.compare(record, before, ("/home/dave/.ssh/authorized_keys",),
                         date(2026, 11, 24))
    text = "\n".join(str(x) for x in found)
    assert [x.check for x in found] == [
        "offboarding.locked", "offboarding.expired", "offboarding.nologin",
        "offboarding.keys_removed", "offboarding.sudo_removed", "offboarding.groups_removed",
        "offboarding.jobs_removed", "offboarding.jobs_removed", "offboarding.processes_ended"]
    assert all(x.clauses == ("R-OFF",) for x in found)
    for expected in ("dave: password: expected locked, found status P",
                     "dave: account expiry: expected 0 (expired), found never",
                     "dave: login shell: expected /usr/sbin/nologin, found /bin/bash",
                     "dave: SSH keys: expected none (quarantined), found "
                     "/home/dave/.ssh/authorized_keys",
                     "dave: sudoers rule: expected none, found /etc/sudoers.d/dave:1",
                     "dave: groups: expected none besides the primary group, found adm, sudo",
                     "dave: crontab: expected none, found /var/spool/cron/crontabs/dave",
                     "dave: at jobs: expected none, found 2",
                     "dave: processes: expected none, found 1 running"):
        assert expected in text, text


def test_absent_user_has_no_steps() -> None:
    f = facts("absent_srv1.out", "ghost")
    assert f.account is None and f.shadow is None
    assert fix.freeze_steps(POLICY, "ghost", f, TICKET) == []


def test_freeze_steps_close_every_door_in_order() -> None:
    steps = fix.freeze_steps(POLICY, "dave", facts("before_srv2.out"), TICKET)
    whats = [s.what for s in steps]
    assert whats == [
        "prepare the root-only record and quarantine directories",
        "write the root-only record (ticket HR-7, due 2026-12-31)",
        "lock the password",
        "expire the account (chage -E 0)",
        "set the login shell to /usr/sbin/nologin",
        "move /home/dave/.ssh/authorized_keys to the quarantine",
        "move /home/dave/.ssh/authorized_keys2 to the quarantine",
        "disable the sudoers rules of dave (/etc/sudoers.d/dave)",
        "remove dave from the groups adm, sudo (sudo and every other right that comes with "
        "a group)",
        "disable the crontab /var/spool/cron/crontabs/dave (moved to the quarantine)",
        "disable the at jobs 2 (saved to the quarantine)",
        "deny new cron and at jobs (cron.deny, at.deny)",
        "end every process and session of the user (SSH included)",
    ]
    by = {s.what: s for s in steps}
    assert by["expire the account (chage -E 0)"].command == "chage -E 0 dave"
    kill = by["end every process and session of the user (SSH included)"]
    assert "loginctl terminate-user dave" in kill.command  # a systemd host
    assert "pkill -KILL -u dave" in kill.command
    sudo = by["disable the sudoers rules of dave (/etc/sudoers.d/dave)"]
    assert "visudo -cqf" in sudo.command  # never installs a sudoers file sudo would reject
    record = by["write the root-only record (ticket HR-7, due 2026-12-31)"].command
    # Through the one validated install: root 0600, renamed into place, content exact.
    assert "chmod 0600 \"$new\"" in record and "chown root:root \"$new\"" in record
    assert 'mv -f "$new" /var/lib/baomi/offboarding/dave.json' in record
    written = json.loads(base64.b64decode(re.findall(r"printf %s (\S+) \| base64", record)[0]))
    assert (written["ticket"], written["due"], written["state"]) == ("HR-7", "2026-12-31",
                                                                     "frozen")
    assert all(s.clause == "R-OFF" for s in steps)
    assert steps[2].script().startswith("if ! ( passwd -S dave")


def test_freeze_without_kill_sessions_policy() -> None:
    policy = load_text("offboarding:\n  kill_sessions: false\n")
    whats = [s.what for s in fix.freeze_steps(policy, "dave", facts("before_srv2.out"),
                                              TICKET)]
    assert "end every process and session of the user (SSH included)" not in whats


def test_keys_paths_expand_sshd_tokens() -> None:
    a = core.Account("eve", 1500, 1500, "/home/eve", "/bin/sh")
    assert core.keys_paths((".ssh/authorized_keys", "/etc/ssh/keys/%u", "/k/%U/%h%%x",
                            ".ssh/authorized_keys"), a) == (
        "/home/eve/.ssh/authorized_keys", "/etc/ssh/keys/eve", "/k/1500//home/eve%x")


def test_purge_steps_archive_delete_and_retire_the_uid() -> None:
    f = facts("frozen_srv2.out")
    assert f.record is not None
    shipped = load(Path(__file__).resolve().parents[2] / "policy.yaml")  # has sensitive paths
    steps = fix.purge_steps(shipped, f.record, f, "2026-12-31T02:00:00Z")
    whats = [s.what for s in steps]
    archive = "/var/lib/baomi/custody/dave-uid1003-frozen2026-11-23.tar.gz"
    assert whats == [
        f"archive the home and the files under sensitive paths to {archive} (SHA-256 "
        "manifest, custodian root)",
        "hand dave's files under sensitive paths to the custodian root",
        "delete the account and its home /home/dave",
        "keep UID 1003 retired (baomi-retired-1003: locked, expired, nologin, no home)",
        f"mark the record deleted (archive {archive})",
    ]
    assert [s.clause for s in steps[:2]] == ["R-RET", "R-RET"]
    # The home and the sensitive paths go to the host-side archiver (no file list, no link).
    assert ("archive 1003 /home/dave /var/lib/baomi/offboarding/quarantine/dave root "
            f"{archive} /srv/customers") in steps[0].command
    assert f"timeout --kill-after=30 {fix.ARCHIVE_SECONDS} python3 -c" in steps[0].command
    # Every step re-checks, in its own script, that the account is still the frozen one.
    assert all(s.command.startswith(fix.still_frozen("dave", 1003)) for s in steps)
    assert "userdel -r dave" in steps[2].command
    assert "useradd -u 1003 -g 1003 -M -d /nonexistent -s /usr/sbin/nologin" \
        in steps[3].command


def test_purge_is_due_on_the_due_date_not_before() -> None:
    record = {"user": "dave", "state": "frozen", "due": "2026-12-31"}
    assert not core.is_due(record, date(2026, 12, 30))
    assert core.is_due(record, date(2026, 12, 31))
    assert not core.is_due(dict(record, state="deleted"), date(2027, 1, 5))


def test_records_are_parsed_from_the_host() -> None:
    text = (DATA / "records_srv2.out").read_text(encoding="utf-8")
    records = core.parse_records(core.sections_out(text, "records"))
    assert records["dave"]["state"] == "frozen"
    assert records["bob"]["state"] == "deleted"
    assert records["bob"]["retired_by"] == "baomi-retired-1001"


def test_checks_with_nobody_to_look_at_are_not_applicable() -> None:
    text = (DATA / "records_srv2.out").read_text(encoding="utf-8")
    both = core.parse_records(core.sections_out(text, "records"))
    assert core.not_applicable(both) == {}
    frozen_only = {u: r for u, r in both.items() if r["state"] == "frozen"}
    assert core.not_applicable(frozen_only) == {
        "offboarding.account_deleted": "no user is recorded deleted on this host",
        "offboarding.uid_retired": "no user is recorded deleted on this host"}
    nobody = core.not_applicable({})
    assert set(nobody) == {c.id for c in core.CHECKS}


def test_ledger_fold_keeps_the_latest_state_with_times() -> None:
    events = [
        {"time": "t1", "user": "u", "host": "a", "state": "frozen", "ticket": "T", "due": "d"},
        {"time": "t1", "user": "u", "host": "b", "state": "pending", "error": "unreachable"},
        {"time": "t2", "user": "u", "host": "a", "state": "frozen"},
        {"time": "t2", "user": "u", "host": "b", "state": "frozen", "ticket": "T"},
        {"time": "t3", "user": "u", "host": "a", "state": "waiting", "due": "d"},
        {"time": "t4", "user": "u", "host": "a", "state": "deleted", "archive": "/x.tgz"},
        {"time": "t5", "user": "u", "host": "b", "state": "frozen", "dry": True},
        {"time": "t5", "user": None, "host": "c", "state": "unreachable"},
    ]
    table = fold(events)
    assert table["u"]["a"]["state"] == "deleted" and table["u"]["a"]["since"] == "t4"
    assert table["u"]["a"]["frozen_at"] == "t1" and table["u"]["a"]["archive"] == "/x.tgz"
    assert table["u"]["b"]["state"] == "frozen" and table["u"]["b"]["since"] == "t2"
    assert table["u"]["b"]["error"] is None
    assert set(table) == {"u"}


def test_policy_explain_shows_offboarding_served() -> None:
    rows = {r["clause"]: r for r in explain(POLICY)}
    for clause in ("R-OFF", "R-RET"):
        assert rows[clause]["enforced"] and rows[clause]["verified"], rows[clause]
        # R-OFF is also served by the collector (HR's runs as root: collector.offboard_runner)
        (own,) = [c for c in rows[clause]["controls"]
                  if c["deploy"] == "baomi.deploy.offboarding"]
        assert own["check"] == "baomi.checks.test_offboarding"


def test_purge_refusal_names_a_rehire_or_an_undone_freeze() -> None:
    f = facts("frozen_srv2.out")
    assert f.record is not None
    assert core.purge_refusal(f.record, f) is None
    rehired = core.Facts(**{**f.__dict__, "account": core.Account("dave", 1050, 1050,
                                                                  "/home/dave", "/bin/bash")})
    assert str(core.purge_refusal(f.record, rehired)).startswith(
        "dave: UID 1050, the frozen account's was 1003 (rehired?): not purged (baomi offboard "
        "dave --cancel --ticket T if it is to stay)")
    unlocked = core.Facts(**{**f.__dict__, "shadow": core.Shadow("20000", "0", "P")})
    assert "password not locked (status P)" in str(core.purge_refusal(f.record, unlocked))
    unexpired = core.Facts(**{**f.__dict__, "shadow": core.Shadow("20000", "", "L")})
    assert "account not expired" in str(core.purge_refusal(f.record, unexpired))
    gone = core.Facts(**{**f.__dict__, "account": None})
    assert core.purge_refusal(f.record, gone) is None


def test_dates_that_delete_users_early_are_named() -> None:
    today = date(2026, 12, 2)
    assert core.date_problems(today, now=today, effective=today - timedelta(days=7)) == []
    assert core.date_problems(today, now=date(2099, 1, 1)) == [
        "--now 2099-01-01 is in the future (today is 2026-12-02, UTC): users would be "
        "deleted before their date"]
    assert core.date_problems(today, effective=date(2026, 10, 1)) == [
        "--effective 2026-10-01 is 62 days ago (more than 7): the deletion would be due on "
        "2026-11-30"]


def test_cancel_marks_the_record_and_keeps_it() -> None:
    f = facts("frozen_srv2.out")
    assert f.record is not None
    (step,) = fix.cancel_steps(f.record, "HR-9", "ops", "rehired", "2026-12-02T10:00:00Z")
    assert step.what == "mark the record cancelled (ticket HR-9): never purged"
    written = json.loads(base64.b64decode(re.findall(r"printf %s (\S+) \| base64",
                                                     step.command)[0]))
    assert (written["state"], written["cancel_ticket"], written["cancelled_by"],
            written["ticket"]) == ("cancelled", "HR-9", "ops", f.record["ticket"])
    assert not core.is_due(written, date(2099, 1, 1))
