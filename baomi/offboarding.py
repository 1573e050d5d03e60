"""R-OFF 离职帐号冻结与注销, R-RET 清退客户资料: reading a departed user's state on a host.

Everything here is pure and read-only.  A host is read once with :func:`observe_script`
(one round trip); :func:`parse` turns the output into :class:`Facts` (``getent shadow``
fields 1,3-8 only: the password hash never leaves the host); :func:`compare` says whether a
user this host's record calls frozen (or deleted) is really shut out, each finding made by
one of the checks below (stable IDs, like a control's).  Offboarding is a procedure with its
own command, not a baseline control, so it has no ``Control``; the due dates and the
refusals (who may never be offboarded) are here too.

The freeze and purge themselves — the steps that change the host — are in
:mod:`baomi.fixes.offboarding`, run by pyinfra over SSH (``deploy/offboarding.py``) today and
by the agent locally on endpoints that were offline later.

>>> due_date(date(2026, 11, 23))
datetime.date(2026, 12, 31)
>>> due_date(date(2026, 1, 31))
datetime.date(2026, 2, 28)
"""

from __future__ import annotations

import calendar
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from baomi.controls.contract import Check, Result, check
from baomi.controls.registry import entry
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

NAME = "offboarding"
CLAUSES = entry(NAME).clauses
OFF, RET = ("R-OFF",), ("R-OFF", "R-RET")

LOCKED = check("offboarding.locked", "the frozen user's password is locked", OFF)
EXPIRED = check("offboarding.expired", "the frozen user's account is expired (chage -E 0)", OFF)
NOLOGIN_SHELL = check("offboarding.nologin", "the frozen user's login shell is nologin", OFF)
KEYS_REMOVED = check("offboarding.keys_removed",
                     "no authorized_keys file of the frozen user is left in place", OFF)
SUDO_REMOVED = check("offboarding.sudo_removed", "no sudoers rule names the frozen user", OFF)
GROUPS_REMOVED = check("offboarding.groups_removed",
                       "the frozen user is in no group besides the primary one", OFF)
JOBS_REMOVED = check("offboarding.jobs_removed", "no crontab and no at job of the frozen user",
                     OFF)
PROCESSES_ENDED = check("offboarding.processes_ended",
                        "no process or session of the frozen user runs", OFF)
RECORDED = check("offboarding.recorded",
                 "a user recorded frozen still has its account (deletion is recorded)", OFF)
DELETED = check("offboarding.account_deleted", "a user recorded deleted has no account", OFF)
DUE = check("offboarding.deleted_when_due", "a frozen user is deleted by the due date "
            "(次月月底注销), files archived to the custodian", RET)
UID_RETIRED = check("offboarding.uid_retired",
                    "a deleted user's UID is held by a locked placeholder (never reused)", OFF)
CHECKS = (LOCKED, EXPIRED, NOLOGIN_SHELL, KEYS_REMOVED, SUDO_REMOVED, GROUPS_REMOVED,
          JOBS_REMOVED, PROCESSES_ENDED, RECORDED, DELETED, DUE, UID_RETIRED)
OF_FROZEN = (LOCKED, EXPIRED, NOLOGIN_SHELL, KEYS_REMOVED, SUDO_REMOVED, GROUPS_REMOVED,
             JOBS_REMOVED, PROCESSES_ENDED, RECORDED, DUE)
OF_DELETED = (DELETED, UID_RETIRED)

STATE_DIR = "/var/lib/baomi/offboarding"
QUARANTINE_DIR = f"{STATE_DIR}/quarantine"
NOLOGIN = "/usr/sbin/nologin"
RETIRED_PREFIX = "baomi-retired-"
# POSIX portable user names (letters, digits, '.', '_', '-'; not starting with '-' or '.').
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
_TOKEN = re.compile(r"%(.)")


# --- due dates -------------------------------------------------------------------------------

def due_date(frozen: date) -> date:
    """次月月底注销: the last day of the month after the freeze (leap years included)."""
    year, month = (frozen.year + 1, 1) if frozen.month == 12 else (frozen.year, frozen.month + 1)
    return date(year, month, calendar.monthrange(year, month)[1])


def is_due(record: dict[str, Any], today: date) -> bool:
    return record.get("state") == "frozen" and date.fromisoformat(str(record["due"])) <= today


# How old a departure date may be without --force: an old one makes the deletion due at once.
EFFECTIVE_MAX_AGE_DAYS = 7


def date_problems(today: date, *, now: date | None = None,
                  effective: date | None = None) -> list[str]:
    """Dates that would delete users before their time (refused unless forced, then recorded):
    a purge judged on a future day, a departure counted from long ago.

    >>> [p[:35] for p in date_problems(date(2026, 12, 2), now=date(2099, 1, 1))]
    ['--now 2099-01-01 is in the future (']
    """
    found = []
    if now is not None and now > today:
        found.append(f"--now {now} is in the future (today is {today}, UTC): users would be "
                     "deleted before their date")
    if effective is not None and (today - effective).days > EFFECTIVE_MAX_AGE_DAYS:
        found.append(f"--effective {effective} is {(today - effective).days} days ago (more "
                     f"than {EFFECTIVE_MAX_AGE_DAYS}): the deletion would be due on "
                     f"{due_date(effective)}")
    return found


# --- refusals --------------------------------------------------------------------------------

def ere(user: str) -> str:
    """A valid user name as an extended regular expression ('.' is its only metacharacter)."""
    return user.replace(".", "\\.")


def valid_name(user: str) -> bool:
    return bool(_NAME.fullmatch(user))


def refusal(policy: Policy, user: str, connect_user: str | None = None) -> str | None:
    """Why USER must never be offboarded, judged without the host (None: go on)."""
    if not valid_name(user):
        return (f"{user!r} is not a valid POSIX user name (letters, digits, '.', '_', '-', "
                "at most 32, not starting with '-' or '.')")
    if user == "root":
        return "root is never offboarded"
    if user in policy.offboarding.protected_accounts:
        return f"{user} is a protected account (policy offboarding.protected_accounts)"
    if user.startswith(RETIRED_PREFIX):
        return f"{user} is a placeholder that keeps a deleted user's UID retired"
    if connect_user is not None and user == connect_user:
        return f"{user} is the account this deploy connects as (inventory ssh_user)"
    return None


def host_refusal(policy: Policy, user: str, facts: Facts,
                 connect_user: str | None = None) -> str | None:
    """:func:`refusal` plus what only the host can tell (the UID)."""
    reason = refusal(policy, user, connect_user)
    if reason or facts.account is None:
        return reason
    if facts.account.uid == 0:
        return f"{user} has UID 0 (a root account)"
    if facts.account.uid < policy.accounts.min_uid:
        return (f"{user} is a system account (UID {facts.account.uid} < policy accounts.min_uid "
                f"{policy.accounts.min_uid})")
    return None


def purge_refusal(record: dict[str, Any], facts: Facts) -> str | None:
    """Why the account a host has now is not the one its record froze (None: purge it).

    A rehire (same name, new UID) or a freeze undone by hand must never be deleted; the
    purge's own steps re-check the same in the script that acts (``still_frozen``)."""
    a, sh, user = facts.account, facts.shadow, facts.user
    if a is None:
        return None
    uid = record.get("uid")
    stay = f"not purged (baomi offboard {user} --cancel --ticket T if it is to stay)"
    if a.uid != uid:
        return f"{user}: UID {a.uid}, the frozen account's was {uid} (rehired?): {stay}"
    if sh is None or not sh.locked:
        return (f"{user}: password not locked (status {sh.status if sh else 'unknown'}): "
                f"{stay}")
    if not sh.expired:
        return f"{user}: account not expired: {stay}"
    if a.shell != NOLOGIN:
        return f"{user}: login shell {a.shell}, not {NOLOGIN}: {stay}"
    return None


# --- facts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Shadow:
    """``getent shadow`` fields 1 and 3-8 (never the hash) and ``passwd -S``'s status."""

    last_change: str
    expire: str
    status: str  # P (usable password), L (locked), NP (no password)

    @property
    def locked(self) -> bool:
        return self.status == "L"

    @property
    def expired(self) -> bool:
        return self.expire == "0"


@dataclass(frozen=True)
class Facts:
    user: str
    account: Account | None
    shadow: Shadow | None
    primary_group: str
    groups: tuple[str, ...]            # supplementary groups
    keys_files: tuple[str, ...]        # sshd's AuthorizedKeysFile for this user, as given
    sudoers: tuple[str, ...]           # "file:line" of rules naming the user first
    sudo_aliases: tuple[str, ...]      # "file:line" of User_Alias lines naming the user
    crontabs: tuple[str, ...]
    at_jobs: tuple[str, ...]
    processes: tuple[int, ...]
    systemd: bool
    linger: bool
    record: dict[str, Any] | None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # every user's record
    home_owner: int | None = None
    retired: tuple[int, ...] = ()      # UIDs held by baomi-retired-* placeholders


def record_path(user: str) -> str:
    return f"{STATE_DIR}/{user}.json"


def log_path(user: str) -> str:
    return f"{STATE_DIR}/{user}.log"


def quarantine(user: str) -> str:
    return f"{QUARANTINE_DIR}/{user}"


def observe_script(user: str) -> str:
    """Read-only: everything the freeze and the purge of USER decide on, in one round trip."""
    if not valid_name(user):
        raise ValueError(f"{user!r} is not a valid user name")
    u = shlex.quote(user)
    return script({
        "passwd": f"getent passwd {u}",
        "shadow": f"getent shadow {u} | cut -d: -f1,3-8",
        "status": f"passwd -S {u}",
        "groups": f"id -ng {u} && id -nG {u}",
        "sshd": f"sshd -T -C user={u},host=localhost,addr=127.0.0.1 2>/dev/null "
                "| grep -i '^authorizedkeysfile ' || sshd -T | grep -i '^authorizedkeysfile '",
        "sudoers": "grep -nE '^[[:space:]]*" + ere(user) + "[[:space:]]' /etc/sudoers "
                   "/etc/sudoers.d/* 2>/dev/null",
        "sudo_aliases": "grep -nE '^[[:space:]]*User_Alias[[:space:]].*[=,[:space:]]" + ere(user)
                        + "([[:space:]]*,|[[:space:]]*$)' /etc/sudoers /etc/sudoers.d/* "
                        "2>/dev/null",
        "crontab": f"for f in /var/spool/cron/crontabs/{u} /var/spool/cron/{u}; do "
                   "[ -f \"$f\" ] && echo \"$f\"; done; true",
        "atq": "atq 2>/dev/null",
        "ps": "ps -e -o pid=,uid=,ruid=",
        "systemd": "[ -d /run/systemd/system ] && command -v loginctl",
        "linger": f"[ -e /var/lib/systemd/linger/{u} ]",
        "home_owner": f"stat -c %u \"$(getent passwd {u} | cut -d: -f6)\"",
        "record": cat(record_path(user)),
        "records": f"for f in {STATE_DIR}/*.json; do [ -f \"$f\" ] && cat \"$f\" && echo; "
                   "done; true",
        "retired": f"getent passwd | grep '^{RETIRED_PREFIX}' | cut -d: -f3",
    })


def records_script() -> str:
    """Read-only: every offboarding record on the host (for the daily purge)."""
    return script({
        "records": f"for f in {STATE_DIR}/*.json; do [ -f \"$f\" ] && cat \"$f\" && echo; "
                   "done; true",
    })


def parse_records(text: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("user"), str):
            found[item["user"]] = item
    return found


def parse(user: str, output: str) -> Facts:
    s = sections(output)

    def out(name: str) -> str:
        return s.text(name) or ""

    account = None
    fields = out("passwd").strip().split(":")
    if len(fields) >= 7 and fields[0] == user:
        account = Account(fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6])
    shadow = None
    sh = out("shadow").strip().split(":")
    st = out("status").split()
    if len(sh) >= 7 and sh[0] == user:
        shadow = Shadow(last_change=sh[1], expire=sh[6], status=st[1] if len(st) > 1 else "")
    lines = out("groups").splitlines()
    primary = lines[0].strip() if lines else ""
    groups = tuple(g for g in (lines[1].split() if len(lines) > 1 else ()) if g != primary)
    keys: tuple[str, ...] = ()
    for line in out("sshd").splitlines():
        parts = line.split()
        if parts and parts[0].lower() == "authorizedkeysfile":
            keys = tuple(p for p in parts[1:] if p.lower() != "none")
            break
    uid = account.uid if account else None
    procs = []
    for line in out("ps").splitlines():
        parts = line.split()
        if len(parts) == 3 and uid is not None and str(uid) in (parts[1], parts[2]):
            procs.append(int(parts[0]))
    at_jobs = tuple(line.split()[0] for line in out("atq").splitlines()
                    if line.split() and line.split()[-1] == user)
    record_text = out("record").strip()
    try:
        record = json.loads(record_text) if record_text else None
    except json.JSONDecodeError:
        record = None
    owner = out("home_owner").strip()
    return Facts(
        user=user, account=account, shadow=shadow, primary_group=primary, groups=groups,
        keys_files=keys,
        sudoers=tuple(_file_line(x) for x in out("sudoers").splitlines() if x.strip()),
        sudo_aliases=tuple(_file_line(x) for x in out("sudo_aliases").splitlines()
                           if x.strip()),
        crontabs=tuple(x.strip() for x in out("crontab").splitlines() if x.strip()),
        at_jobs=at_jobs, processes=tuple(procs),
        systemd=bool(s.get("systemd") and s["systemd"].ok),
        linger=bool(s.get("linger") and s["linger"].ok),
        record=record if isinstance(record, dict) else None,
        records=parse_records(out("records")),
        home_owner=int(owner) if owner.isdigit() else None,
        retired=tuple(int(x) for x in out("retired").split() if x.isdigit()),
    )


def _file_line(grep_line: str) -> str:
    # grep -n over several files: FILE:LINE:TEXT; the text of a sudoers rule is not evidence
    # we need to carry (it may name hosts and commands), FILE:LINE is enough.
    parts = grep_line.split(":", 2)
    return ":".join(parts[:2]) if len(parts) >= 2 and parts[1].isdigit() else grep_line


def keys_paths(templates: tuple[str, ...], account: Account) -> tuple[str, ...]:
    """sshd's AuthorizedKeysFile tokens expanded (%h, %u, %U, %%); relative means in home."""
    table = {"h": account.home, "u": account.name, "U": str(account.uid), "%": "%"}
    paths = []
    for template in templates:
        path = _TOKEN.sub(lambda m: table.get(m[1], m[0]), template)
        if not path.startswith("/"):
            path = f"{account.home.rstrip('/')}/{path}"
        if path not in paths:
            paths.append(path)
    return tuple(paths)


def sections_out(output: str, name: str) -> str:
    """The output of one section of an observe script ('' when it failed or is missing)."""
    return sections(output).text(name) or ""


# --- verification (the check, later the agent) -----------------------------------------------

def present_script(paths: tuple[str, ...]) -> str:
    """Read-only: which of PATHS exist (keys files of a frozen user)."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return script({"present": f"for p in {quoted}; do [ -e \"$p\" ] || [ -L \"$p\" ] && "
                              "echo \"$p\"; done; true"})


def parse_present(output: str) -> tuple[str, ...]:
    return tuple(x for x in sections_out(output, "present").splitlines() if x.strip())


def compare(record: dict[str, Any], facts: Facts, present: tuple[str, ...],
            today: date) -> list[Finding]:
    """Is a user that this host's record says is frozen (or deleted) really shut out?"""
    user = str(record.get("user"))
    state = record.get("state")
    found: list[Finding] = []

    def finding(of: Check, subject: str, expected: str, seen: str,
                severity: str = "high") -> None:
        found.append(of.finding(f"{user}: {subject}", expected, seen, severity))

    a = facts.account
    if state == "deleted":
        if a is not None:
            finding(DELETED, "account", "deleted (record says so)", f"present (UID {a.uid})")
        if int(record.get("uid", -1)) not in facts.retired:
            finding(UID_RETIRED, "UID", f"{record.get('uid')} kept retired by "
                    f"{RETIRED_PREFIX}{record.get('uid')}",
                    "no placeholder (a new account may reuse it)", "medium")
        return found
    if state != "frozen" or a is None:
        if state == "frozen":
            finding(RECORDED, "account", "frozen", "missing without a deletion record", "medium")
        return found
    sh = facts.shadow
    if sh is None or not sh.locked:
        finding(LOCKED, "password", "locked", f"status {sh.status if sh else 'unknown'}")
    if sh is None or not sh.expired:
        finding(EXPIRED, "account expiry", "0 (expired)",
                (sh.expire or "never") if sh else "unknown")
    if a.shell != NOLOGIN:
        finding(NOLOGIN_SHELL, "login shell", NOLOGIN, a.shell)
    for path in present:
        finding(KEYS_REMOVED, "SSH keys", "none (quarantined)", path, "critical")
    for where in facts.sudoers:
        finding(SUDO_REMOVED, "sudoers rule", "none", where, "critical")
    if facts.groups:
        finding(GROUPS_REMOVED, "groups", "none besides the primary group",
                ", ".join(facts.groups))
    for path in facts.crontabs:
        finding(JOBS_REMOVED, "crontab", "none", path)
    if facts.at_jobs:
        finding(JOBS_REMOVED, "at jobs", "none", ", ".join(facts.at_jobs))
    if facts.processes:
        finding(PROCESSES_ENDED, "processes", "none", f"{len(facts.processes)} running (PIDs "
                f"{', '.join(str(p) for p in facts.processes[:10])})", "critical")
    if is_due(record, today):
        finding(DUE, "deletion", f"done by {record.get('due')} (次月月底注销)",
                f"still frozen on {today.isoformat()}", "high")
    return found


def not_applicable(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Checks with nobody to look at on this host: no frozen, no deleted user recorded."""
    states = {r.get("state") for r in records.values()}
    out: dict[str, str] = {}
    if "frozen" not in states:
        out.update((c.id, "no user is recorded frozen on this host") for c in OF_FROZEN)
    if "deleted" not in states:
        out.update((c.id, "no user is recorded deleted on this host") for c in OF_DELETED)
    return out


def run(execute: Callable[[str], str], host: str, today: date) -> Result:
    """Every user this host's records name, read (``execute`` runs a read-only script on the
    host, over SSH or locally) and compared: the check's and the agent's one reading."""
    records = parse_records(sections_out(execute(records_script()), "records"))
    findings: list[Finding] = []
    for user, record in sorted(records.items()):
        facts = parse(user, execute(observe_script(user)))
        present: tuple[str, ...] = ()
        if facts.account is not None:
            paths = keys_paths(facts.keys_files, facts.account)
            present = parse_present(execute(present_script(paths)))
        findings += compare(record, facts, present, today)
    skipped = not_applicable(records)
    for f in findings:
        skipped.pop(f.check, None)
    return Result(NAME, host, CHECKS, tuple(findings), skipped)
