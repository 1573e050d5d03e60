"""R-BAK: desired files and schedule, and parse/compare on output captured from lab hosts
(tests/unit/data/backup/: srv1 plain with cron, srv2 systemd, repositories on bak1 over SFTP;
systemd-srv1-* are the contract test's, tests/unit/test_contract.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from baomi.controls import backup as core
from baomi.controls.contract import NOT_APPLICABLE, PASS, HostContext, evaluate
from baomi.findings import Finding
from baomi.policy import Policy, load

DATA = Path(__file__).parent / "data" / "backup"
POLICY = load(Path(__file__).resolve().parents[2] / "policy.yaml")
SERVERS = {"servers"}


def desired(groups: set[str], host: str, policy: Policy = POLICY) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, host))


def captured(name: str) -> core.Observed:
    text = (DATA / name).read_text(encoding="utf-8")
    return core.parse(text, desired(SERVERS, "srv2"))


def seen(name: str) -> core.Observed:
    """Captured output, with the installed helper's hash taken as the current helper's (the
    captures hold the hash of the helper as it was then; helper drift is tested below)."""
    observed = captured(name)
    if observed.helper_sha256 is None:
        return observed
    return dataclasses.replace(observed, helper_sha256=core.helper_sha256())


def test_edited_helper_is_found() -> None:
    observed = dataclasses.replace(captured("systemd-ok.txt"), helper_sha256="0" * 64)
    findings = core.compare(desired(SERVERS, "srv2"), observed)
    assert [(f.check, f.subject, f.found) for f in findings] == [
        ("backup.setup", core.HELPER_PATH, "edited content")]


def parts(findings: list[Finding]) -> set[str]:
    """The parts of R-BAK that failed: the check IDs without the control's name."""
    return {f.check.removeprefix("backup.") for f in findings}


def test_desired_schedule_and_paths_follow_the_policy() -> None:
    want = desired(SERVERS, "srv2")
    assert want.repository == "sftp:backup@bak1:/srv/restic/srv2"
    assert want.sftp == core.Sftp("backup", "bak1", "/srv/restic/srv2")
    assert want.paths == ("/srv/customers", "/srv/contracts")  # not the workstation path
    assert "OnCalendar=Sun *-*-* 02:00:00\n" in want.timer
    assert "Persistent=true" in want.timer and "RandomizedDelaySec=3600" in want.timer
    assert "0 2 * * 0 root sleep $(shuf -i 0-3600 -n 1) && " in want.cron
    assert desired({"workstations"}, "ws1").paths == ("/home/shared/clients",)
    assert core.schedule(1, "Sun", "23:30") == ("*-*-* 23:30:00", "30 23 * * *")


def test_not_applicable_hosts_have_a_reason() -> None:
    assert core.not_applicable(desired({"backup"}, "bak1")) == \
        "no sensitive path applies to this host's groups (backup)"
    off = dataclasses.replace(POLICY, backup=dataclasses.replace(POLICY.backup, enabled=False))
    assert core.not_applicable(desired(SERVERS, "srv1", off)) == "policy: backup.enabled is false"
    assert core.compare(desired(SERVERS, "srv1", off), seen("plain-no-snapshot.txt")) == []
    assert core.not_applicable(desired(SERVERS, "srv1")) is None


def test_without_verify_the_repository_checks_are_not_applicable() -> None:
    want = desired(SERVERS, "srv2")
    text = (DATA / "systemd-ok.txt").read_text(encoding="utf-8")
    unverified = text[:text.index("\n==> verify")]
    assert unverified != text
    observed = dataclasses.replace(core.parse(unverified, want),
                                   helper_sha256=core.helper_sha256())  # as in seen()
    result = evaluate(core.CONTROL, "srv2", want, observed)
    assert {c.id: result.status(c.id) for c in core.CHECKS} == {
        "backup.setup": PASS, "backup.schedule": PASS, "backup.freshness": NOT_APPLICABLE,
        "backup.continuity": NOT_APPLICABLE, "backup.repository": NOT_APPLICABLE,
        "backup.restore": NOT_APPLICABLE}


def test_local_repository_has_no_sftp_part() -> None:
    assert core.parse_repository("/var/backups/restic/srv1") is None
    assert core.parse_repository("sftp:bak1:/r") == core.Sftp("root", "bak1", "/r")


def test_systemd_host_after_one_run_is_compliant() -> None:
    observed = seen("systemd-ok.txt")
    want = desired(SERVERS, "srv2")
    assert observed.systemd and observed.timer_enabled == "enabled"
    assert core.compare(want, observed) == []
    evidence = evaluate(core.CONTROL, "srv2", want, observed).evidence
    assert set(evidence) == {c.id for c in core.CHECKS}
    restore = evidence["backup.restore"]
    assert "5/5 files" in restore and "temporary copy removed" in restore
    assert observed.password == "600 root 43"  # mode, owner, size: never the password


def test_plain_host_without_a_snapshot_fails_freshness_not_schedule() -> None:
    want = desired(SERVERS, "srv1")
    never = core.compare(want, seen("plain-no-snapshot.txt"))
    assert parts(never) == {"freshness", "continuity", "restore"}
    assert all(f.found == "no snapshots" for f in never)
    assert core.compare(want, seen("plain-ok.txt")) == []
    assert "cron running" in core.evidence(want, seen("plain-ok.txt"))["backup.schedule"]


def test_gap_is_named_with_its_dates_and_stopped_timer_is_found() -> None:
    observed = seen("systemd-gap-timer-stopped.txt")
    findings = core.compare(desired(SERVERS, "srv2"), observed)
    assert parts(findings) == {"schedule", "continuity"}
    schedule = [f for f in findings if f.check == "backup.schedule"]
    assert schedule[0].found == "enabled, inactive"
    gaps = [f.found for f in findings if f.check == "backup.continuity"]
    assert gaps == ["gap of 21.0 days from 2026-10-11 02:40 UTC to 2026-11-01 02:05 UTC",
                    "gap of 8.5 days from 2026-11-15 02:20 UTC to 2026-11-23 14:16 UTC"]


def test_gap_allows_the_grace_and_only_looks_at_the_retained_chain() -> None:
    want = desired(SERVERS, "srv2")
    t0 = dt.datetime(2026, 1, 4, 2, tzinfo=dt.UTC)
    week = dt.timedelta(days=7)
    late = (core.Snapshot("a", t0), core.Snapshot("b", t0 + week + dt.timedelta(hours=23)))
    assert core.gaps(want, late) == []
    chain = [core.Snapshot(str(i), t0 + i * week) for i in range(want.keep)]
    old_gap = (core.Snapshot("x", t0 - 30 * week), *chain)
    assert core.gaps(want, old_gap) == []  # the gap lies before the retention window


def test_corrupt_pack_fails_restic_check() -> None:
    findings = core.compare(desired(SERVERS, "srv2"), seen("systemd-corrupt-pack.txt"))
    repository = [f for f in findings if f.check == "backup.repository"]
    assert repository and repository[0].found.startswith("Pack ID does not match")


def test_wrong_password_is_one_clear_finding_per_part() -> None:
    findings = core.compare(desired(SERVERS, "srv2"), seen("systemd-wrong-password.txt"))
    assert parts(findings) == {"freshness", "continuity", "repository", "restore"}
    assert {f.found for f in findings} == {"Fatal: wrong password or no key found"}


def test_restic_times_parse() -> None:
    assert core.parse_time("2026-11-23T14:11:51.069149458Z") == dt.datetime(
        2026, 11, 23, 14, 11, 51, tzinfo=dt.UTC)
    assert core.parse_time("2024-01-01T10:00:00+08:00").hour == 10
