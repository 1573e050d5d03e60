"""The agent's rules: pure functions from a file's old and new state to findings.

Every finding names its check (a stable ID), its clause and a severity taken from the level
of the sensitive path the file is under; none carries file contents (metadata and hashes).

* R-ACL — owner, group or mode wider than the level allows: the *same* judgement as the
  ``sensitive_paths`` control's checks (:func:`baomi.controls.sensitive_paths.entry_findings`),
  applied to each changed file as it changes.
* R-DST — a file past its retention (the path's ``retention_days``, else its level's):
  ``destruction.retention``.
* R-FIM — every content change, creation, deletion, move, mode, owner or group change under
  a sensitive path is a drift finding (``agent.drift.*``).  The levels whose data is audited
  (``audit: true``: 机密, 绝密 by default) require integrity: their drift has the level's
  severity; drift under other levels is recorded at ``info``.  Whether a change was
  authorised is for a person to say (acknowledging the finding at the collector, with a
  comment); the agent reports every one.
* R-ENC — a 机密/绝密 path not on an encrypted mount: the ``disk_encryption`` control's own
  evidence chain, run locally by the agent's self-check (:mod:`baomi.agent.service`).

A standing finding (ACL, retention) is one the file *has*: the agent reports it when it
appears or its evidence changes and sends ``resolved`` when it goes; drift findings are
events that stay until acknowledged.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from baomi.agent.files import FileState
from baomi.agent.scan import Change
from baomi.controls import sensitive_paths as sp
from baomi.controls.contract import HostContext, check
from baomi.findings import Finding
from baomi.policy import Level, Policy

DAY_NS = 86_400 * 10**9

DRIFT = {kind: check(f"agent.drift.{kind}", title, ("R-FIM",)) for kind, title in (
    ("created", "a file appeared under a sensitive path"),
    ("content", "a file's content changed (its hash differs from the baseline)"),
    ("deleted", "a file under a sensitive path was deleted or moved out"),
    ("moved", "a file was moved or renamed within the sensitive paths"),
    ("mode", "a file's permission bits changed"),
    ("owner", "a file's owner changed"),
    ("group", "a file's group changed"),
    ("kind", "a path changed type (e.g. a file replaced by a link)"),
    ("swapped", "a file is no longer reachable without following a link (a folder on its "
                "way was replaced: not followed)"),
)}
RETENTION = check("destruction.retention", "no file is kept past its retention period")
SPOOL_DROPPED = check("agent.spool_dropped",
                      "no finding was lost: the spool never had to drop one", ("R-LOG",))
WATCH_POLLING = check("agent.watch_polling",
                      "every sensitive path is watched by inotify (not slower polling)",
                      ("R-FIM",))
SCAN_ERRORS = check("agent.scan_errors", "every file under the sensitive paths is readable "
                    "by the agent", ("R-FIM",))

# For `baomi policy explain`: which policy section each rule watches.
RULES_BY_CONTROL: dict[str, tuple[str, ...]] = {
    "sensitive_paths": ("sensitive_paths owner/group/mode of each file as it changes (R-ACL)",),
    "disk_encryption": ("disk_encryption.sensitive_paths re-checked locally (R-ENC)",),
    "destruction": (RETENTION.id,),
    "agent": (*(c.id for c in DRIFT.values()), SPOOL_DROPPED.id, WATCH_POLLING.id,
              SCAN_ERRORS.id),
}


@dataclass(frozen=True)
class Watched:
    """A sensitive path as the agent judges files under it."""

    want: sp.PathWant
    level: Level
    retention_days: int

    @property
    def path(self) -> str:
        return self.want.path

    @property
    def drift_severity(self) -> str:
        return self.level.severity if self.level.audit else "info"


def watched(policy: Policy, groups: set[str]) -> tuple[Watched, ...]:
    """The host's sensitive paths, with the sensitive_paths control's own ceilings."""
    wants = {w.path: w for w in sp.desired(HostContext.of(policy, groups)).paths}
    out = []
    for p in policy.paths_for(groups):
        level = policy.level(p.level)
        out.append(Watched(wants[p.path], level, p.retention_days or level.retention_days))
    return tuple(out)


def owner_of(paths: tuple[Watched, ...], path: str) -> Watched | None:
    """The innermost sensitive path holding ``path``."""
    best: Watched | None = None
    for w in paths:
        root = w.path.rstrip("/") or "/"
        if (path == root or path.startswith(root + "/")) and (
                best is None or len(root) > len(best.path)):
            best = w
    return best


Names = Callable[[int, int], tuple[str, str]]
"""uid, gid → (user name, group name); numbers as text when the host has no such name."""


def entry(state: FileState, names: Names) -> sp.Entry:
    user, group = names(state.uid, state.gid)
    return sp.Entry(state.kind, state.mode, user, group, state.path)


def standing(w: Watched, state: FileState | None, names: Names, now_ns: int) -> list[Finding]:
    """The findings a file has in this state (none when it does not exist)."""
    if state is None or state.kind == "l":
        return []  # links are judged where they point (as the sensitive_paths check does)
    found = sp.entry_findings(w.want, entry(state, names))
    if state.kind == "f":
        age_days = (now_ns - state.mtime_ns) // DAY_NS
        if age_days > w.retention_days:
            found.append(RETENTION.finding(
                state.path, f"kept at most {w.retention_days} days ({w.level.name})",
                f"last modified {age_days} days ago", w.level.severity,
                retention_days=w.retention_days))
    return found


def _evidence(s: FileState, names: Names) -> str:
    user, group = names(s.uid, s.gid)
    digest = f" {s.digest}" if s.digest else ""
    return f"{s.kind} {stat.S_IMODE(s.mode):04o} {user}:{group} {s.size} bytes{digest}"


WRITES = ("agent.drift.created", "agent.drift.content")  # changes fanotify can attribute


def drift(w: Watched, change: Change, names: Names) -> list[Finding]:
    """The R-FIM findings of one change (metadata and hashes only)."""
    old, new = change.old, change.new
    sev = w.drift_severity
    level = {"level": w.level.name, "sensitive_path": w.path}
    if new is None:
        assert old is not None  # noqa: S101 type narrowing: one of old/new is set
        return [DRIFT["deleted"].finding(old.path, "present (baseline: "
                                         f"{_evidence(old, names)})", "deleted", sev,
                                         before=old.as_dict(), **level)]
    if change.moved_from is not None:
        return [DRIFT["moved"].finding(new.path, f"at {change.moved_from}",
                                       f"moved from {change.moved_from}", sev,
                                       moved_from=change.moved_from, after=new.as_dict(),
                                       **level)]
    if old is None:
        return [DRIFT["created"].finding(new.path, "absent from the baseline",
                                         f"created: {_evidence(new, names)}", sev,
                                         after=new.as_dict(), **level)]
    out = []
    details = {"before": old.as_dict(), "after": new.as_dict(), **level}
    if old.kind != new.kind:
        out.append(DRIFT["kind"].finding(new.path, f"type {old.kind}", f"type {new.kind}", sev,
                                         **details))
    elif old.digest != new.digest:
        out.append(DRIFT["content"].finding(
            new.path, f"content {old.digest or 'not hashed'} ({old.size} bytes)",
            f"content {new.digest or 'not hashed'} ({new.size} bytes)", sev, **details))
    if stat.S_IMODE(old.mode) != stat.S_IMODE(new.mode):
        out.append(DRIFT["mode"].finding(new.path, f"mode {stat.S_IMODE(old.mode):04o}",
                                         f"mode {stat.S_IMODE(new.mode):04o}", sev, **details))
    (old_user, old_group), (user, group) = names(old.uid, old.gid), names(new.uid, new.gid)
    if old.uid != new.uid:
        out.append(DRIFT["owner"].finding(new.path, f"owner {old_user}", f"owner {user}", sev,
                                          **details))
    if old.gid != new.gid:
        out.append(DRIFT["group"].finding(new.path, f"group {old_group}", f"group {group}", sev,
                                          **details))
    return out


def swapped(w: Watched, path: str, folder: str, now: str) -> Finding:
    """A folder on the way to PATH was replaced (by a link or a file) between the listing
    and the re-hash: reported, never followed (no hash or metadata of the target)."""
    sev = w.drift_severity
    return DRIFT["swapped"].finding(path, f"reached through the folder {folder}",
                                    f"{folder} is now {now}; not followed", sev,
                                    folder=folder, level=w.level.name, sensitive_path=w.path)


def spool_dropped(total: int, by_severity: dict[str, int]) -> Finding:
    """The spool reached its bound and dropped findings (lowest severities first)."""
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(by_severity.items()))
    return SPOOL_DROPPED.finding("agent spool", "no finding dropped",
                                 f"{total} findings dropped (this time {counts})", "high",
                                 total=total, by_severity=by_severity)


def watch_polling(path: str, reason: str) -> Finding:
    return WATCH_POLLING.finding(path, "watched by inotify", f"polled instead: {reason}",
                                 "medium")


def scan_errors(root: str, errors: list[str]) -> Finding:
    return SCAN_ERRORS.finding(root, "every entry readable",
                               f"{len(errors)} unreadable: " + "; ".join(errors[:5]), "medium",
                               errors=errors[:20])
