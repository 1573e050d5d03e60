"""The collector host's two root-side runs (R-AUD, R-OFF), as systemd reports them.

- the regular audit (:mod:`baomi.fleet_access`): ``baomi-audit.timer`` enabled and active with
  the policy's ``reporting.schedule``; its service's last run succeeded (exit 0, or 1:
  findings, uploaded) and is not older than the schedule allows (twice its longest gap as
  systemd reads the schedule, plus the random delay and a run's time);
- HR's offboarding (:mod:`baomi.collector.offboard_runner`): ``baomi-offboard.path`` and
  ``baomi-offboard.timer`` enabled and active, the three unit files baomi's, the runner's
  last run succeeded.

Both are not applicable without systemd (nothing runs a timer there).  Part of the
``collector`` control (:mod:`baomi.controls.collector`): its observe script includes
:func:`observe_commands`, its parser :func:`parse_audit` and :func:`parse_offboard`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from baomi import fleet_access as fleet
from baomi.controls.contract import check
from baomi.controls.supervised import unit_file_finding
from baomi.findings import Finding
from baomi.observe import cat

AUDIT_TIMER = check("collector.audit_timer", "the regular audit's timer runs on the policy's "
                    "schedule and its last run succeeded in time", ("R-AUD",))
OFFBOARD_RUNNER = check("collector.offboard_runner", "HR's offboarding requests and the daily "
                        "purge run as root from the collector (path and timer units enabled, "
                        "last run succeeded)", ("R-OFF",))
CHECKS = (AUDIT_TIMER, OFFBOARD_RUNNER)
ELAPSES = 8  # elapses of the schedule read: its longest gap is what "in time" allows
NO_SYSTEMD_OFFBOARD = ("no systemd on this host: no root-side runner; HR's requests run in the "
                       "service itself when collector.toml's offboard_inventory names a fleet "
                       "the service user may reach")
NO_SYSTEMD = ("no systemd on this host: nothing runs a timer here (the supervisor only keeps "
              "the service up); run `baomi audit --upload` on schedule from the controller")


def observe_commands(schedule: str) -> dict[str, str]:
    """Read-only: both runs' unit files, states and last runs; the schedule's elapses."""
    return {
        "audit_timer_unit": cat(fleet.TIMER_PATH),
        "audit_service_unit": cat(fleet.SERVICE_PATH),
        "audit_timer": f"systemctl is-enabled {fleet.TIMER}; systemctl is-active {fleet.TIMER}",
        "audit_last": f"systemctl show --timestamp=unix -p Result -p ExecMainStatus "
                      f"-p ExecMainExitTimestamp {fleet.SERVICE} && systemctl show "
                      f"--timestamp=unix -p ActiveEnterTimestamp {fleet.TIMER} && "
                      "echo Now=@$(date +%s)",
        "audit_period": f"TZ=UTC systemd-analyze calendar --iterations={ELAPSES} "
                        f"{shlex.quote(schedule)}",
        "offboard_units": "; ".join(f"echo '--- {p}'; cat {p}" for p in OFFBOARD_UNIT_PATHS),
        "offboard_state": f"systemctl is-enabled {fleet.OFFBOARD_PATH} {fleet.OFFBOARD_TIMER}; "
                          f"systemctl is-active {fleet.OFFBOARD_PATH} {fleet.OFFBOARD_TIMER}",
        "offboard_last": f"systemctl show --timestamp=unix -p Result -p ExecMainStatus "
                         f"-p ExecMainExitTimestamp {fleet.OFFBOARD_SERVICE}",
    }


@dataclass(frozen=True)
class OffboardRunner:
    """The runner's unit files (path → text, None: missing), its path and timer units' states
    and the service's last run, as systemd says."""

    units: dict[str, str | None]
    states: tuple[str, ...]  # is-enabled path, timer; is-active path, timer
    last: dict[str, str]  # Result, ExecMainStatus, ExecMainExitTimestamp


OFFBOARD_UNIT_PATHS = (fleet.OFFBOARD_SERVICE_PATH, fleet.OFFBOARD_PATH_PATH,
                       fleet.OFFBOARD_TIMER_PATH)


def parse_offboard(sec: Any) -> OffboardRunner:
    units: dict[str, str | None] = dict.fromkeys(OFFBOARD_UNIT_PATHS)
    current: str | None = None
    for line in (sec.text("offboard_units") or "").splitlines(keepends=True):
        if line.startswith("--- ") and line[4:].strip() in units:
            current = line[4:].strip()
            units[current] = ""
        elif line.startswith("cat: "):
            continue  # the file is missing (stays None unless its marker came first)
        elif current is not None:
            units[current] = (units[current] or "") + line
    for path, text in units.items():  # a missing file printed only its marker
        if text == "":
            units[path] = None
    last: dict[str, str] = {}
    for line in (sec.text("offboard_last") or "").splitlines():
        key, _, value = line.partition("=")
        last[key] = value.strip()
    states = tuple(sec["offboard_state"].out.split() if "offboard_state" in sec else [])
    return OffboardRunner(units, (*states, "", "", "", "")[:4], last)


@dataclass(frozen=True)
class AuditRun:
    """The regular audit's timer and its service's last run, as systemd says."""

    timer_unit: str | None
    service_unit: str | None
    enabled: str
    active: str
    last: dict[str, str]  # Result, ExecMainStatus, ExecMainExitTimestamp, ActiveEnterTimestamp
    period: float | None  # the longest gap between the schedule's elapses; None: unreadable
    period_error: str


def period(text: str | None) -> tuple[float | None, str]:
    """The longest gap between the elapses ``systemd-analyze calendar --iterations=N``
    printed (UTC; a weekday schedule's weekend, not its one-day gap), or None and why."""
    if text is None:
        return None, "systemd-analyze could not read the schedule"
    stamps = []
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Next elapse" or key.startswith("Iter. #"):
            try:
                stamps.append(datetime.strptime(value.strip(), "%a %Y-%m-%d %H:%M:%S %Z"))
            except ValueError:
                return None, f"unreadable elapse {value.strip()!r}"
    if len(stamps) < 2:
        return None, "the schedule has no two future elapses"
    return max((b - a).total_seconds() for a, b in pairwise(stamps)), ""


def stamp(value: str) -> float | None:
    try:
        return float(value.removeprefix("@")) if value.startswith("@") else None
    except ValueError:
        return None


def parse_audit(sec: Any) -> AuditRun:
    last: dict[str, str] = {}
    for line in (sec.text("audit_last") or "").splitlines():
        key, _, value = line.partition("=")
        last[("Timer" if key == "ActiveEnterTimestamp" else "") + key] = value.strip()
    states = (sec["audit_timer"].out.split() if "audit_timer" in sec else []) + ["", ""]
    gap, error = period(sec.text("audit_period"))
    return AuditRun(sec.text("audit_timer_unit"), sec.text("audit_service_unit"), states[0],
                    states[1], last, gap, error)


def offboard_findings(units: tuple[tuple[str, str], ...], run: OffboardRunner) -> list[Finding]:
    """The runner's three units are baomi's, its path and timer enabled and active (HR's
    requests run at once, a missed one within the timer's period, the purge daily), and its
    last run, if any, succeeded."""
    out: list[Finding] = []
    for path, text in units:
        edited = unit_file_finding(OFFBOARD_RUNNER, path, text, run.units.get(path))
        if edited:
            out.append(edited)
    for i, unit in enumerate((fleet.OFFBOARD_PATH, fleet.OFFBOARD_TIMER)):
        state = f"{run.states[i] or 'unknown'}, {run.states[i + 2] or 'unknown'}"
        if state != "enabled, active":
            out.append(OFFBOARD_RUNNER.finding(unit, "enabled, active", state, "high"))
    ran = stamp(run.last.get("ExecMainExitTimestamp", ""))
    if ran is not None and run.last.get("Result", "") != "success":
        out.append(OFFBOARD_RUNNER.finding(fleet.OFFBOARD_SERVICE, "the last run succeeded",
                                           f"{run.last.get('Result') or 'unknown'}, exit "
                                           f"status {run.last.get('ExecMainStatus', '?')}",
                                           "high"))
    return out


def audit_findings(timer: str, service: str, schedule: str, run: AuditRun) -> list[Finding]:
    """The timer is baomi's, on the policy's schedule, enabled and waiting; the service's last
    run succeeded (exit 0, or 1: findings, uploaded); and a run happened within two elapses
    of the schedule (its longest gap) plus the random delay and a run's time (since the last
    run, or since the timer started waiting when it never ran)."""
    out: list[Finding] = []
    for path, text, seen in ((fleet.TIMER_PATH, timer, run.timer_unit),
                             (fleet.SERVICE_PATH, service, run.service_unit)):
        edited = unit_file_finding(AUDIT_TIMER, path, text, seen)
        if edited:
            out.append(edited)
    state = f"{run.enabled or 'unknown'}, {run.active or 'unknown'}"
    if state != "enabled, active":
        out.append(AUDIT_TIMER.finding(fleet.TIMER, f"enabled, active (OnCalendar="
                                       f"{schedule})", state, "high"))
    result = run.last.get("Result", "")
    ran = stamp(run.last.get("ExecMainExitTimestamp", ""))
    if ran is not None and result != "success":
        out.append(AUDIT_TIMER.finding(fleet.SERVICE, "the last run succeeded (exit 0 or 1)",
                                       f"{result or 'unknown'}, exit status "
                                       f"{run.last.get('ExecMainStatus', '?')}", "high"))
    if run.period is None:
        out.append(AUDIT_TIMER.finding(f"reporting.schedule {schedule}",
                                       "a systemd calendar expression", run.period_error,
                                       "high"))
        return out
    now = stamp(run.last.get("Now", ""))
    since = ran if ran is not None else stamp(run.last.get("TimerActiveEnterTimestamp", ""))
    allowed = 2 * run.period + fleet.RANDOMIZED_DELAY + fleet.RUN_SECONDS
    # Neither a run nor a waiting timer: the timer's own finding above already says why.
    if now is not None and since is not None and now - since > allowed:
        what = "the last run" if ran is not None else "no run since the timer started"
        out.append(AUDIT_TIMER.finding(fleet.SERVICE, f"a run within {allowed / 3600:.1f} h "
                                       f"({schedule})",
                                       f"{what}: {(now - since) / 3600:.1f} h ago", "high"))
    return out


def evidence(schedule: str, audit: AuditRun | None, runner: OffboardRunner | None,
             ) -> dict[str, str]:
    """What the passing checks looked at: the timer, the schedule and the last run; the
    runner's units' states and its last run."""
    if audit is None:
        return {}
    found: dict[str, str] = {}
    ran = stamp(audit.last.get("ExecMainExitTimestamp", ""))
    last = (f"last run {audit.last.get('Result', '?')} at "
            f"{datetime.fromtimestamp(ran, UTC):%Y-%m-%dT%H:%M:%SZ}" if ran is not None
            else "no run yet")
    found[AUDIT_TIMER.id] = (f"{fleet.TIMER} {audit.enabled}, {audit.active}, "
                             f"OnCalendar={schedule}; {last}")
    if runner is not None:
        done = stamp(runner.last.get("ExecMainExitTimestamp", ""))
        found[OFFBOARD_RUNNER.id] = (
            f"{fleet.OFFBOARD_PATH} and {fleet.OFFBOARD_TIMER} "
            f"{'/'.join(runner.states[:2])}, {'/'.join(runner.states[2:])}; "
            + (f"last run {runner.last.get('Result', '?')} at "
               f"{datetime.fromtimestamp(done, UTC):%Y-%m-%dT%H:%M:%SZ}"
               if done is not None else "no run yet"))
    return found


def skipped(systemd: bool) -> dict[str, str]:
    return {} if systemd else {AUDIT_TIMER.id: NO_SYSTEMD, OFFBOARD_RUNNER.id: NO_SYSTEMD_OFFBOARD}
