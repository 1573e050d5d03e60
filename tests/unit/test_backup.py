"""R-BAK: desired files and schedule, and parse/compare on output captured from lab hosts
(tests/unit/data/backup/: srv1 plain with cron, srv2 systemd, repositories on bak1 over SFTP;
systemd-srv1-* are the contract test's, tests/unit/test_contract.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from baomi.controls import backup as core
from baomi.controls.contract import NOT_APPLICABLE, PASS, HostContext, evaluate
from baomi.findings import Finding
from baomi.fixes import backup as fix
from baomi.policy import Policy, PolicyError, load, load_text

DATA = Path(__file__).parent / "data" / "backup"
POLICY = load(Path(__file__).resolve().parents[2] / "policy.yaml")
SERVERS = {"servers"}


def desired(groups: set[str], host: str, policy: Policy = POLICY) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, host))


def captured(name: str) -> core.Observed:
    text = (DATA / name).read_text(encoding="utf-8")
    return core.parse(text, desired(SERVERS, "srv2"))


def seen(name: str) -> core.Observed:
    """Captured output, with the installed helper's hash and configuration taken as the
    current ones (the captures hold them as they were then, over SFTP; drift is tested
    below)."""
    observed = captured(name)
    if observed.helper_sha256 is None:
        return observed
    return current(observed)


def current(observed: core.Observed) -> core.Observed:
    host = json.loads(observed.config or "{}").get("host", "srv2")
    return dataclasses.replace(observed, helper_sha256=core.helper_sha256(),
                               config=desired(SERVERS, host).config)


def test_edited_helper_is_found() -> None:
    observed = dataclasses.replace(seen("systemd-ok.txt"), helper_sha256="0" * 64)
    findings = core.compare(desired(SERVERS, "srv2"), observed)
    assert [(f.check, f.subject, f.found) for f in findings] == [
        ("backup.setup", core.HELPER_PATH, "edited content")]


def parts(findings: list[Finding]) -> set[str]:
    """The parts of R-BAK that failed: the check IDs without the control's name."""
    return {f.check.removeprefix("backup.") for f in findings}


def test_desired_schedule_and_paths_follow_the_policy() -> None:
    want = desired(SERVERS, "srv2")
    assert want.repository == "rclone:backup@bak1:/srv/restic/srv2"
    assert want.remote == core.Remote("backup", "bak1", "/srv/restic/srv2")
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
    observed = current(core.parse(unverified, want))  # as in seen()
    result = evaluate(core.CONTROL, "srv2", want, observed)
    assert {c.id: result.status(c.id) for c in core.CHECKS} == {
        "backup.setup": PASS, "backup.schedule": PASS, "backup.freshness": NOT_APPLICABLE,
        "backup.continuity": NOT_APPLICABLE, "backup.repository": NOT_APPLICABLE,
        "backup.restore": NOT_APPLICABLE}


def test_local_repository_has_no_remote_part() -> None:
    assert core.parse_repository("/var/backups/restic/srv1") is None
    assert core.parse_repository("rclone:bak1:/r") is None  # no account: never a default
    assert core.parse_repository("sftp:backup@bak1:/r") is None


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


def test_the_repository_must_name_an_unprivileged_account() -> None:
    cases = {
        "sftp:bak1:/srv/restic/{host}": "names no account on the backup host",
        "rclone:bak1:/srv/restic/{host}": "names no account on the backup host",
        "rclone:root@bak1:/srv/restic/{host}": "'root' cannot hold the repositories",
        "sftp:backup@bak1:/srv/restic/{host}": "over sftp every client could delete its",
    }
    for url, message in cases.items():
        text = f'backup:\n  repository: "{url}"\n'
        with pytest.raises(PolicyError) as caught:
            load_text(text, "p.yaml")
        problem = caught.value.problems[0]
        assert (problem.file, problem.line, problem.column) == ("p.yaml", 2, 15), problem
        assert message in problem.message, (url, problem.message)
    assert load_text('backup:\n  repository: "/var/backups/restic/{host}"\n').backup.repository


def test_each_client_key_serves_only_its_repository_and_gone_hosts_are_revoked() -> None:
    existing = (fix.authorized_line("srv1", "ssh-ed25519 AAA1", "/srv/restic/srv1")
                + fix.authorized_line("gone", "ssh-ed25519 AAA9", "/srv/restic/gone")
                + "ssh-ed25519 AAAx someone@elsewhere\n")
    paths = {"srv1": "/srv/restic/srv1", "srv2": "/srv/restic/srv2", "srv3": "/srv/restic/srv3"}
    text = fix.authorized_text(existing, {"srv2": "ssh-ed25519 AAA2"}, paths)
    assert text == (
        'restrict,command="serve-restic /srv/restic/srv1" ssh-ed25519 AAA1 baomi-backup@srv1\n'
        'restrict,command="serve-restic /srv/restic/srv2" ssh-ed25519 AAA2 baomi-backup@srv2\n')
    # srv1 (outside this run) keeps its key, srv3 has published none yet, "gone" and the
    # line baomi did not write are revoked.
    assert fix.managed_keys(text) == {"srv1": "ssh-ed25519 AAA1", "srv2": "ssh-ed25519 AAA2"}


def test_volumes_holding_backed_up_paths_must_be_mounted() -> None:
    text = (Path(__file__).resolve().parents[2] / "policy.yaml").read_text(encoding="utf-8")
    policy = load_text(text.replace("  volumes: []", "  volumes: [{device: /dev/vdb, mount: "
                                    "/srv/customers, groups: [servers]}, {device: /dev/vdc, "
                                    "mount: /home, groups: [workstations]}]"))
    assert desired(SERVERS, "srv1", policy).mount_points == ("/srv/customers",)
    assert desired({"workstations"}, "ws1", policy).mount_points == ("/home",)
    assert desired(SERVERS, "srv1").mount_points == ()
    config = json.loads(desired(SERVERS, "srv1", policy).config)
    assert config["mount_points"] == ["/srv/customers"] and "keep" not in config
    assert config["rclone_args"] == "serve restic --stdio --append-only"
