"""R-BAK 每周二次备份: a weekly encrypted restic backup with proven continuity and restores.

The control contract (:mod:`baomi.controls.contract`): ``desired`` (the host's context →
files and schedule), ``observe_script`` (read-only commands; with ``verify`` it also lists
snapshots, runs ``restic check`` and a sample restore into a temporary directory that it
removes), ``parse`` and ``compare`` (→ findings of the checks below, one per part of R-BAK:
``backup.setup``, ``.schedule``, ``.freshness``, ``.continuity``, ``.repository``,
``.restore``), ``evidence`` (what each check looked at, shown when it passes too).

The job itself is ``baomi/hostside/backup_job.py`` (installed as HELPER_PATH); the check runs
the same text with ``python3 -c``, so a tampered installed copy cannot vouch for itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

SETUP = check("backup.setup", "the job, its configuration and the root-only password file")
SCHEDULE = check("backup.schedule", "the job is scheduled (systemd timer, or cron without systemd)")
FRESHNESS = check("backup.freshness", "the newest snapshot is younger than the interval + grace")
CONTINUITY = check("backup.continuity",
                   "no gap longer than the interval + grace in the retained snapshots")
REPOSITORY = check("backup.repository", "restic check finds no error in the repository")
RESTORE = check("backup.restore", "a sample of files restores with equal hashes")
CHECKS = (SETUP, SCHEDULE, FRESHNESS, CONTINUITY, REPOSITORY, RESTORE)
VERIFIED = (FRESHNESS, CONTINUITY, REPOSITORY, RESTORE)  # need the repository opened
HEADER = "# Managed by baomi: R-BAK 每周二次备份. Local edits are reverted.\n"

CONF_DIR = "/etc/baomi/backup"
PASSWORD_FILE = f"{CONF_DIR}/password"
CONFIG_FILE = f"{CONF_DIR}/config.json"
KEY_FILE = f"{CONF_DIR}/id_ed25519"
KNOWN_HOSTS = f"{CONF_DIR}/known_hosts"
HELPER_PATH = "/usr/local/sbin/baomi-backup"
STATUS_FILE = "/var/lib/baomi/backup-status.json"
SERVICE = "baomi-backup.service"
TIMER = "baomi-backup.timer"
SERVICE_FILE = f"/etc/systemd/system/{SERVICE}"
TIMER_FILE = f"/etc/systemd/system/{TIMER}"
CRON_FILE = "/etc/cron.d/baomi-backup"
ESCROW_KIND = "restic-password"

STATE_DIR = "/var/lib/baomi/backup"  # the job's own root-only folder (restore tests)
# The backup host's account runs only this shell: it serves one repository append-only.
SHELL_PATH = "/usr/local/sbin/baomi-repository-shell"
RCLONE_ARGS = "serve restic --stdio --append-only"  # what a client asks; the key's command rules

_HOSTSIDE = Path(__file__).parents[1] / "hostside"
HELPER = (_HOSTSIDE / "backup_job.py").read_text(encoding="utf-8")
SHELL = (_HOSTSIDE / "backup_shell.py").read_text(encoding="utf-8")
_CRON_DAYS = {"Sun": 0, "Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6}


@dataclass(frozen=True)
class Remote:
    """``rclone:USER@HOST:/PATH``: the account and server that hold the repository.

    The client runs restic's rclone backend with ssh as the program; on the server the key's
    forced command serves PATH with ``rclone serve restic --append-only`` (snapshots can be
    added, never removed or overwritten; only lock files can be deleted)."""

    user: str
    server: str
    path: str


def parse_repository(url: str) -> Remote | None:
    """The parts of a remote repository URL; None for a local path.  There is no default
    account (the policy requires one: a default would be root on the backup host)."""
    match = re.fullmatch(r"rclone:(?P<user>[^@:/]+)@(?P<server>[^@:/]+):(?P<path>/.*)", url)
    if not match:
        return None
    return Remote(match["user"], match["server"], match["path"])


@dataclass(frozen=True)
class Desired:
    enabled: bool
    reason: str  # why nothing is deployed/checked here (disabled, no paths), else ""
    host: str
    repository: str
    remote: Remote | None
    paths: tuple[str, ...]
    mount_points: tuple[str, ...]  # must be mount points when the job runs
    interval_days: int
    grace_hours: int
    keep: int
    keep_monthly: int
    forget_min_percent: int
    on_calendar: str
    cron_schedule: str
    config: str
    helper: str
    service: str
    timer: str
    cron: str

    @property
    def applies(self) -> bool:
        return not self.reason

    @property
    def allowed_gap(self) -> dt.timedelta:
        return dt.timedelta(days=self.interval_days, hours=self.grace_hours)


def schedule(interval_days: int, weekday: str, time: str) -> tuple[str, str]:
    """(systemd OnCalendar, cron fields) for the policy's interval, day and time."""
    hour, minute = time.split(":")
    if interval_days == 7:
        return (f"{weekday} *-*-* {time}:00",
                f"{int(minute)} {int(hour)} * * {_CRON_DAYS[weekday]}")
    if interval_days == 1:
        return f"*-*-* {time}:00", f"{int(minute)} {int(hour)} * * *"
    # Every N days from the 1st of each month (a month boundary only shortens a gap).
    return (f"*-*-01/{interval_days} {time}:00",
            f"{int(minute)} {int(hour)} */{interval_days} * *")


def ssh_command(remote: Remote) -> str:
    """restic's rclone.program: ssh to the backup host with the client's own key."""
    return (f"ssh -i {KEY_FILE} -o IdentitiesOnly=yes -o UserKnownHostsFile={KNOWN_HOSTS} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=20 "
            f"{remote.user}@{remote.server}")


def forced_command(path: str) -> str:
    """What a client's key may run on the backup host (read by SHELL, never by a shell)."""
    return f"serve-restic {path}"


def _under(path: str, mount: str) -> bool:
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def mount_points_for(policy: Policy, groups: set[str], paths: tuple[str, ...]) -> tuple[str, ...]:
    """Paths that must be mount points for a run: the policy's own list, and the mount point
    of every data volume of these groups that holds a backed-up path (a volume that failed to
    mount leaves an empty folder, which must never be saved as the data)."""
    volumes = [v.mount.rstrip("/") or "/" for v in policy.disk_encryption.volumes
               if ("all" in v.groups or groups & set(v.groups))
               and any(_under(p, v.mount) for p in paths)]
    return tuple(sorted(set(policy.backup.mount_points) | set(volumes)))


def paths_for(policy: Policy, groups: set[str]) -> tuple[str, ...]:
    """The policy's explicit paths, else the sensitive paths that apply to these groups."""
    if policy.backup.paths:
        return policy.backup.paths
    return tuple(p.path for p in policy.paths_for(groups))


def desired(ctx: HostContext) -> Desired:
    policy, groups, host = ctx.policy, set(ctx.groups), ctx.host
    b = policy.backup
    paths = paths_for(policy, groups)
    reason = ""
    if not b.enabled:
        reason = "policy: backup.enabled is false"
    elif not paths:
        reason = f"no sensitive path applies to this host's groups ({', '.join(sorted(groups))})"
    repository = b.repository.replace("{host}", host)
    remote = parse_repository(repository)
    mounts = mount_points_for(policy, groups, paths)
    on_calendar, cron_fields = schedule(b.interval_days, b.weekday, b.time)
    config = json.dumps({
        "host": host, "repository": repository, "password_file": PASSWORD_FILE,
        "rclone_program": ssh_command(remote) if remote else "", "rclone_args": RCLONE_ARGS,
        "paths": list(paths), "mount_points": list(mounts), "exclude": list(b.exclude),
        "state_dir": STATE_DIR, "check_every_days": b.check_every_days,
        "restore_sample_files": b.restore_sample_files}, indent=1, sort_keys=True) + "\n"
    service = (HEADER + "[Unit]\nDescription=baomi R-BAK weekly secondary backup (restic)\n"
               "Wants=network-online.target\nAfter=network-online.target\n\n"
               f"[Service]\nType=oneshot\nExecStart={HELPER_PATH} run\nNice=10\n"
               "IOSchedulingClass=idle\nPrivateTmp=yes\n")
    timer = (HEADER + "[Unit]\nDescription=baomi R-BAK backup schedule\n\n"
             f"[Timer]\nOnCalendar={on_calendar}\n"
             f"RandomizedDelaySec={b.randomized_delay_minutes * 60}\nPersistent=true\n\n"
             "[Install]\nWantedBy=timers.target\n")
    delay = b.randomized_delay_minutes * 60
    sleep = f"sleep $(shuf -i 0-{delay} -n 1) && " if delay else ""
    cron = (HEADER + "SHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{cron_fields} root {sleep}{HELPER_PATH} run >/dev/null 2>&1\n")
    return Desired(b.enabled, reason, host, repository, remote, paths, mounts, b.interval_days,
                   b.grace_hours, b.keep, b.keep_monthly, b.forget_min_percent, on_calendar,
                   cron_fields, config, HELPER, service, timer, cron)


def prune_config(want: Desired) -> dict[str, Any]:
    """What the prune program needs on the host that holds ``want``'s repository (the backup
    host for a remote one, run as its account; the client itself for a local path)."""
    remote = want.remote
    return {"host": want.host, "repository": remote.path if remote else want.repository,
            "account": remote.user if remote else "root", "keep_last": want.keep,
            "keep_monthly": want.keep_monthly, "min_percent": want.forget_min_percent}


def observe_script(want: Desired, verify: bool = True, snapshots: bool = False) -> str:
    """Read-only commands.  ``verify`` adds snapshots, ``restic check`` and a sample restore
    (the deploy leaves it out: it only needs the files and the schedule); ``snapshots`` without
    ``verify`` lists the snapshots only (``baomi backup status``)."""
    commands = {
        "now": "date -u +%s",
        "init": "if [ -d /run/systemd/system ]; then echo systemd; else echo other; fi",
        "config": cat(CONFIG_FILE),
        "helper": f"sha256sum {HELPER_PATH}",
        "password": f"stat -c '%a %U %s' {PASSWORD_FILE}",
        "service": cat(SERVICE_FILE),
        "timer": cat(TIMER_FILE),
        "timer_state": f"systemctl is-enabled {TIMER}; systemctl is-active {TIMER}",
        "cron": cat(CRON_FILE),
        "crond": "pgrep -x cron >/dev/null && echo running",
        "status": cat(STATUS_FILE),
    }
    if verify:
        commands["verify"] = (f"[ -e {CONFIG_FILE} ] || exit 3; "
                              f"python3 -c {shlex.quote(HELPER)} verify")
    elif snapshots:
        commands["verify"] = (f"[ -e {CONFIG_FILE} ] || exit 3; "
                              f"python3 -c {shlex.quote(HELPER)} snapshots")
    return script(commands)


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: dt.datetime


@dataclass(frozen=True)
class Observed:
    now: dt.datetime
    systemd: bool
    config: str | None
    helper_sha256: str | None
    password: str | None  # "mode owner size", never the password
    service: str | None
    timer: str | None
    timer_enabled: str
    timer_active: str
    cron: str | None
    crond_running: bool
    status: dict[str, Any]
    verified: bool
    repo_error: str
    snapshots: tuple[Snapshot, ...]
    check: dict[str, Any]
    restore: dict[str, Any]
    raw: dict[str, str] = field(default_factory=dict, compare=False)


def parse_time(stamp: str) -> dt.datetime:
    """restic's RFC 3339 times (nanoseconds, Z or ±hh:mm) as aware datetimes."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?", stamp)
    if not match:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    zone = match[2] or "Z"
    return dt.datetime.fromisoformat(match[1] + ("+00:00" if zone == "Z" else zone))


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unreadable: {text.strip()[-200:]!r}"}
    return value if isinstance(value, dict) else {}


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    text = sec.text

    now_text = (text("now") or "0").strip()
    state = (sec["timer_state"].out.split() if "timer_state" in sec else []) + ["", ""]
    verify = sec.get("verify")
    found = _json(verify.out) if verify is not None and verify.rc == 0 else {}
    repo_error = ""
    if verify is None:
        pass
    elif verify.rc == 3:
        repo_error = f"{CONFIG_FILE} is missing"
    elif verify.rc != 0 or not found.get("ok"):
        repo_error = (found.get("error") or verify.out.strip()[-300:]
                      or f"exit {verify.rc}")
    snaps = tuple(sorted((Snapshot(s["id"], parse_time(s["time"]))
                          for s in found.get("snapshots", [])), key=lambda s: s.time))
    helper = text("helper")
    return Observed(
        now=dt.datetime.fromtimestamp(int(now_text or 0), dt.UTC),
        systemd=(text("init") or "").strip() == "systemd",
        config=text("config"),
        helper_sha256=helper.split()[0] if helper else None,
        password=(text("password") or "").strip() or None,
        service=text("service"),
        timer=text("timer"),
        timer_enabled=state[0],
        timer_active=state[1],
        cron=text("cron"),
        crond_running=(text("crond") or "").strip() == "running",
        status=_json(text("status")),
        verified=verify is not None,
        repo_error=repo_error,
        snapshots=snaps,
        check=found.get("check", {}),
        restore=found.get("restore_test", {}),
    )


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _age(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def gaps(want: Desired, snaps: tuple[Snapshot, ...]) -> list[tuple[Snapshot, Snapshot]]:
    """Consecutive snapshots of the retained chain further apart than the interval + grace."""
    chain = snaps[-want.keep:]
    return [(a, b) for a, b in itertools.pairwise(chain) if b.time - a.time > want.allowed_gap]


def helper_sha256() -> str:
    return hashlib.sha256(HELPER.encode()).hexdigest()


def compare(want: Desired, seen: Observed) -> list[Finding]:
    if not want.applies:
        return []
    out: list[Finding] = []
    # setup: the files the job needs (the password only as mode/owner, never read).
    if seen.config != want.config:
        out.append(SETUP.finding(CONFIG_FILE, "the policy's repository, paths, retention",
                                 "missing" if seen.config is None else "edited content"))
    if seen.helper_sha256 != helper_sha256():
        out.append(SETUP.finding(HELPER_PATH, "baomi's backup job",
                                 "missing" if seen.helper_sha256 is None else "edited content"))
    if seen.password is None:
        out.append(SETUP.finding(PASSWORD_FILE, "the repository password, root 0600",
                                 "missing", "critical"))
    elif not seen.password.startswith("600 root "):
        mode, _, rest = seen.password.partition(" ")
        out.append(SETUP.finding(PASSWORD_FILE, "mode 600 owner root",
                                 f"mode {mode} owner {rest.split()[0] if rest else '?'}",
                                 "critical"))
    out.extend(_schedule(want, seen))
    if seen.verified:
        out.extend(_repository(want, seen))
    return out


def _schedule(want: Desired, seen: Observed) -> list[Finding]:
    out = []
    if seen.systemd:
        for path, have, should in ((SERVICE_FILE, seen.service, want.service),
                                   (TIMER_FILE, seen.timer, want.timer)):
            if have != should:
                out.append(SCHEDULE.finding(
                    path, f"OnCalendar={want.on_calendar}, Persistent=true",
                    "missing" if have is None else "edited content"))
        if seen.timer_enabled != "enabled" or seen.timer_active != "active":
            out.append(SCHEDULE.finding(TIMER, "enabled and active",
                                        f"{seen.timer_enabled or 'unknown'}, "
                                        f"{seen.timer_active or 'unknown'}"))
    else:
        if seen.cron != want.cron:
            out.append(SCHEDULE.finding(CRON_FILE, f"'{want.cron_schedule}' {HELPER_PATH}",
                                        "missing" if seen.cron is None else "edited content"))
        if not seen.crond_running:
            out.append(SCHEDULE.finding("cron daemon", "running (no systemd here)",
                                        "not running"))
    return out


def _repository(want: Desired, seen: Observed) -> list[Finding]:
    if seen.repo_error:
        # One clear finding per part that cannot be verified, naming the cause.
        return [c.finding(want.repository, "a repository this host can open", seen.repo_error,
                          "critical") for c in VERIFIED]
    out = []
    if not seen.snapshots:
        return [c.finding(want.repository, "at least one snapshot", "no snapshots", "critical")
                for c in (FRESHNESS, CONTINUITY, RESTORE)]
    newest = seen.snapshots[-1]
    age = seen.now - newest.time
    if age > want.allowed_gap:
        out.append(FRESHNESS.finding(
            f"newest snapshot {newest.id}",
            f"younger than {want.interval_days} days + {want.grace_hours} h",
            f"{_age(age)} old (taken {_day(newest.time)})", "critical", snapshot=newest.id))
    for a, b in gaps(want, seen.snapshots):
        out.append(CONTINUITY.finding(
            f"snapshots {a.id} → {b.id}",
            f"at most {want.interval_days} days + {want.grace_hours} h apart",
            f"gap of {_age(b.time - a.time)} from {_day(a.time)} to {_day(b.time)}", "high",
            start=a.id, end=b.id))
    restic_check = seen.check
    if restic_check.get("exit") != 0:
        out.append(REPOSITORY.finding(
            f"restic check {want.repository}", "no errors",
            restic_check.get("error") or f"exit {restic_check.get('exit')}", "critical"))
    r = seen.restore
    if r.get("error") or r.get("mismatches") or not r.get("matched"):
        problems = [f"{m['path']}: {m['why']}" for m in r.get("mismatches", [])][:5]
        found = "; ".join(filter(None, [r.get("error", ""), *problems])) or "nothing restored"
        out.append(RESTORE.finding(f"restore test of snapshot {r.get('snapshot', '?')}",
                                   f"{r.get('sample', 0)} sampled files restored, hashes equal",
                                   found, "critical"))
    if r and not r.get("removed", True):
        out.append(RESTORE.finding("restore test copy", "removed afterwards", "left on the host"))
    return out


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    """What each part of the check looked at (shown with passing checks too)."""
    snaps = seen.snapshots
    retained = snaps[-want.keep:]
    r, c = seen.restore, seen.check
    if seen.systemd:
        schedule_ = (f"{TIMER} {seen.timer_enabled}/{seen.timer_active}, "
                     f"OnCalendar={want.on_calendar}")
    else:
        schedule_ = (f"{CRON_FILE} '{want.cron_schedule}', cron "
                     f"{'running' if seen.crond_running else 'not running'}")
    return {
        SETUP.id: f"repository {want.repository}, paths {' '.join(want.paths)}",
        SCHEDULE.id: schedule_,
        FRESHNESS.id: (f"newest {snaps[-1].id} taken {_day(snaps[-1].time)}, "
                      f"{_age(seen.now - snaps[-1].time)} old" if snaps else "no snapshots"),
        CONTINUITY.id: (f"{len(retained)} retained snapshots {retained[0].id} "
                       f"({_day(retained[0].time)}) … {retained[-1].id} "
                       f"({_day(retained[-1].time)})" if retained else "no snapshots"),
        REPOSITORY.id: (f"restic check exit {c.get('exit')} in {c.get('seconds')} s "
                       f"at {c.get('time')}" if c else seen.repo_error or "not run"),
        RESTORE.id: (f"snapshot {r.get('snapshot')}: {r.get('matched')}/{r.get('sample')} files "
                    f"({r.get('bytes')} bytes) restored and compared in {r.get('seconds')} s, "
                    f"temporary copy removed" if r else seen.repo_error or "not run"),
    }


def not_applicable(want: Desired) -> str | None:
    """Why this host has no backup (policy off, no path to back up here), else None."""
    return want.reason or None


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Without ``verify`` (``baomi backup status``) the repository parts were not looked at."""
    if seen.verified:
        return {}
    return {c.id: "the repository was not opened (observed without verify)" for c in VERIFIED}


CONTROL: Control[Desired, Observed] = Control(
    "backup", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
