"""R-OFF 离职帐号冻结与注销, R-RET 清退客户资料: the freeze and purge of a departed user, as data.

Everything here is pure.  A host is read once with :func:`observe_script` (read-only, one
round trip); :func:`parse` turns the output into :class:`Facts` (``getent shadow`` fields
1,3-8 only: the password hash never leaves the host).  :func:`freeze_steps` and
:func:`purge_steps` then give the ordered :class:`Step` list: what, which clause, a shell
``command`` and a shell ``done`` test that succeeds when the step is already true.  Any runner
executes a step as "unless ``done`` succeeds, run ``command``": pyinfra over SSH
(``deploy/offboard.py``) today, the agent locally on endpoints that were offline later, so
there is one implementation of what freezing means.

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
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

CONTROL = "offboarding"
CLAUSES = ("R-OFF", "R-RET")

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


# --- refusals --------------------------------------------------------------------------------

def _rx(user: str) -> str:
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
        "sudoers": "grep -nE '^[[:space:]]*" + _rx(user) + "[[:space:]]' /etc/sudoers "
                   "/etc/sudoers.d/* 2>/dev/null",
        "sudo_aliases": "grep -nE '^[[:space:]]*User_Alias[[:space:]].*[=,[:space:]]" + _rx(user)
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


# --- steps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One thing to make true on a host: run ``command`` unless ``done`` already succeeds."""

    user: str
    phase: str        # freeze / purge
    what: str         # what it does, in words (the operation's name)
    clause: str
    command: str
    done: str

    def script(self) -> str:
        """Run-if-needed as one shell line, with a line in the host's log when it acts."""
        note = json.dumps({"step": self.what, "phase": self.phase, "clause": self.clause},
                          ensure_ascii=False)
        log = shlex.quote(log_path(self.user))
        return (f"if ! ( {self.done} ); then ( {self.command} ) && "
                f"printf '%s %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {shlex.quote(note)} "
                f">> {log}; fi")

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "phase": self.phase, "what": self.what,
                "clause": self.clause, "command": self.command, "done": self.done}


@dataclass(frozen=True)
class Ticket:
    """Who asked for the freeze and when it takes effect (HR's trigger)."""

    ticket: str
    operator: str
    reason: str
    effective: date
    time: str  # ISO 8601 UTC of the run


def _state_dirs(user: str) -> str:
    q = shlex.quote(quarantine(user))
    return (f"install -d -m 0755 -o root -g root /var/lib/baomi && "
            f"install -d -m 0700 -o root -g root {STATE_DIR} {QUARANTINE_DIR} {q} && "
            f"touch {shlex.quote(log_path(user))} && chmod 0600 {shlex.quote(log_path(user))}")


def freeze_steps(policy: Policy, user: str, facts: Facts, ticket: Ticket) -> list[Step]:
    """The freeze of USER on a host with FACTS, in order; empty when there is no such account."""
    a = facts.account
    if a is None:
        return []
    u = shlex.quote(user)
    q = quarantine(user)

    def step(what: str, command: str, done: str, clause: str = "R-OFF") -> Step:
        return Step(user, "freeze", what, clause, command, done)

    steps = [
        step("prepare the root-only record and quarantine directories", _state_dirs(user),
             f"[ -d {shlex.quote(q)} ] && [ -f {shlex.quote(log_path(user))} ]"),
        step("lock the password", f"usermod -L {u}",
             f"passwd -S {u} | awk '{{exit !($2 == \"L\")}}'"),
        step("expire the account (chage -E 0)", f"chage -E 0 {u}",
             f"[ \"$(getent shadow {u} | cut -d: -f8)\" = 0 ]"),
        step(f"set the login shell to {NOLOGIN}", f"usermod -s {NOLOGIN} {u}",
             f"[ \"$(getent passwd {u} | cut -d: -f7)\" = {NOLOGIN} ]"),
    ]
    # The record first: it keeps the state before the freeze (groups, shell) as evidence.
    record = {
        "user": user, "uid": a.uid, "gid": a.gid, "home": a.home, "shell": a.shell,
        "state": "frozen", "ticket": ticket.ticket, "operator": ticket.operator,
        "reason": ticket.reason, "frozen_at": ticket.time,
        "effective": ticket.effective.isoformat(),
        "due": due_date(ticket.effective).isoformat(),
        "groups_removed": list(facts.groups), "sudoers_disabled": list(facts.sudoers),
        "sudo_aliases_left": list(facts.sudo_aliases), "quarantine": q,
        "clauses": list(CLAUSES),
    }
    steps.insert(1, step(f"write the root-only record (ticket {ticket.ticket}, due "
                      f"{record['due']})",
                      write_file_script(record_path(user), json.dumps(record, ensure_ascii=False,
                                                                      sort_keys=True)),
                      f"[ -s {shlex.quote(record_path(user))} ]"))
    for index, path in enumerate(keys_paths(facts.keys_files, a)):
        p = shlex.quote(path)
        dest = shlex.quote(f"{q}/ssh-{index}-{path.rsplit('/', 1)[-1]}")
        steps.append(step(f"move {path} to the quarantine",
                          f"mv -f {p} {dest} && chown root:root {dest} && chmod 0600 {dest}",
                          f"[ ! -e {p} ] && [ ! -L {p} ]"))
    if facts.sudoers:
        files = sorted({x.split(":", 1)[0] for x in facts.sudoers})
        cmds = []
        for f in files:
            qf = shlex.quote(f)
            new = shlex.quote(f + ".baomi-new")
            cmds.append(f"cp -p {qf} {new} && sed -i -E 's/^([[:space:]]*{_rx(user)}[[:space:]])/"
                        f"# baomi offboarded {user}: \\1/' {new} && visudo -cqf {new} "
                        f"&& mv -f {new} {qf}")
        steps.append(step(f"disable the sudoers rules of {user} ({', '.join(files)})",
                          " && ".join(cmds),
                          f"! grep -qE '^[[:space:]]*{_rx(user)}[[:space:]]' "
                          + " ".join(shlex.quote(f) for f in files)))
    if facts.groups:
        steps.append(step(f"remove {user} from the groups {', '.join(facts.groups)} "
                          "(sudo and every other right that comes with a group)",
                          f"usermod -G '' {u}",
                          f"[ \"$(id -nG {u})\" = \"$(id -ng {u})\" ]"))
    for path in facts.crontabs:
        p = shlex.quote(path)
        steps.append(step(f"disable the crontab {path} (moved to the quarantine)",
                          f"mv -f {p} {shlex.quote(q + '/crontab')}", f"[ ! -e {p} ]"))
    if facts.at_jobs:
        saves = " && ".join(f"at -c {j} > {shlex.quote(f'{q}/at-{j}')}" for j in facts.at_jobs)
        steps.append(step(f"disable the at jobs {', '.join(facts.at_jobs)} (saved to the "
                          "quarantine)",
                          f"{saves} && atrm {' '.join(facts.at_jobs)}",
                          f"! atq | awk '$NF == \"{user}\"' | grep -q ."))
    deny = " ".join(f"/etc/{d}.deny" for d in ("cron", "at"))
    steps.append(step("deny new cron and at jobs (cron.deny, at.deny)",
                      f"for f in {deny}; do grep -qx {u} \"$f\" 2>/dev/null || "
                      f"echo {u} >> \"$f\"; done",
                      f"for f in {deny}; do grep -qx {u} \"$f\" || exit 1; done"))
    if policy.offboarding.kill_sessions:
        stop = []
        if facts.systemd:
            stop.append(f"loginctl disable-linger {u} 2>/dev/null; "
                        f"loginctl terminate-user {u} 2>/dev/null")
        stop.append(f"pkill -KILL -U {u}; pkill -KILL -u {u}; "
                    f"for i in 1 2 3 4 5 6 7 8 9 10; do pgrep -u {u} >/dev/null || "
                    f"pgrep -U {u} >/dev/null || break; sleep 0.2; pkill -KILL -u {u}; done; "
                    f"! pgrep -u {u} >/dev/null")
        steps.append(step("end every process and session of the user (SSH included)",
                          "; ".join(stop),
                          f"! pgrep -u {u} >/dev/null && ! pgrep -U {u} >/dev/null"
                          + (f" && [ ! -e /var/lib/systemd/linger/{u} ]"
                             if facts.systemd else "")))
    return steps


def write_file_script(path: str, content: str) -> str:
    """Exact content, root-only (0600), atomically."""
    q = shlex.quote(path)
    return (f"umask 077 && printf '%s\\n' {shlex.quote(content)} > {q}.baomi-new && "
            f"chown root:root {q}.baomi-new && mv -f {q}.baomi-new {q}")


def is_due(record: dict[str, Any], today: date) -> bool:
    return record.get("state") == "frozen" and date.fromisoformat(str(record["due"])) <= today


def archive_name(record: dict[str, Any]) -> str:
    return (f"{policy_safe(record['user'])}-uid{int(record['uid'])}-"
            f"frozen{str(record['frozen_at'])[:10]}.tar.gz")


def policy_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def purge_steps(policy: Policy, record: dict[str, Any], facts: Facts, now: str) -> list[Step]:
    """Archive to the custodian, delete the account and home, keep the UID retired."""
    user = str(record["user"])
    uid = int(record["uid"])
    gid = int(record.get("gid", uid))
    u = shlex.quote(user)
    home = facts.account.home if facts.account else str(record.get("home", ""))
    custodian = policy.offboarding.custodian
    c = shlex.quote(custodian)
    archive_dir = policy.offboarding.archive_dir
    archive = f"{archive_dir}/{archive_name(record)}"
    qa = shlex.quote(archive)
    manifest = shlex.quote(archive + ".manifest")
    sensitive = [p.path for p in policy.sensitive_paths]
    owns_home = (home not in ("", "/", "/nonexistent") and facts.home_owner == uid)
    sources = [p for p in ([home] if owns_home else []) + [quarantine(user)]]
    find_sensitive = " ".join(shlex.quote(p) for p in sensitive)
    list_files = "; ".join(
        [f"[ -d {shlex.quote(p)} ] && find {shlex.quote(p)} -xdev \\( -type f -o -type l \\)"
         for p in sources]
        + ([f"find {find_sensitive} -xdev -uid {uid} \\( -type f -o -type l \\) 2>/dev/null"]
           if sensitive else []))

    def step(what: str, command: str, done: str, clause: str = "R-OFF") -> Step:
        return Step(user, "purge", what, clause, command, done)

    work = shlex.quote(f"{STATE_DIR}/.purge-{user}")
    steps = [
        step(f"archive the home and the files under sensitive paths to {archive} "
             f"(SHA-256 manifest, custodian {custodian})",
             f"getent passwd {c} >/dev/null || {{ echo 'custodian {custodian} has no account "
             f"on this host' >&2; exit 1; }}; "
             f"install -d -m 0700 -o {c} -g root {shlex.quote(archive_dir)} && "
             f"rm -rf {work} && install -d -m 0700 {work} && "
             f"{{ {list_files}; }} | sed 's|^/||' | sort -u > {work}/files && "
             f"(cd / && tr '\\n' '\\0' < {work}/files | xargs -0 -r sha256sum --) "
             f"> {work}/manifest && "
             f"(cd / && tar --create --gzip --file {qa}.part --no-recursion "
             f"--verbatim-files-from --files-from {work}/files) && "
             f"cp {work}/manifest {manifest} && "
             f"(cd {shlex.quote(archive_dir)} && sha256sum {shlex.quote(archive_name(record))}"
             f".part | sed 's/\\.part$//' > {qa}.sha256) && mv -f {qa}.part {qa} && "
             f"chown {c} {qa} {manifest} {qa}.sha256 && chmod 0400 {qa} {manifest} {qa}.sha256 "
             f"&& rm -rf {work}",
             f"[ -s {qa} ] && [ -e {manifest} ] && [ -s {qa}.sha256 ]", clause="R-RET"),
    ]
    if sensitive:
        steps.append(step(f"hand {user}'s files under sensitive paths to the custodian "
                          f"{custodian}",
                          f"find {find_sensitive} -xdev -uid {uid} -exec chown -h {c} {{}} + "
                          "2>/dev/null; true",
                          f"! find {find_sensitive} -xdev -uid {uid} 2>/dev/null | grep -q .",
                          clause="R-RET"))
    remove_home = "-r " if owns_home else ""
    steps.append(step(f"delete the account{' and its home ' + home if owns_home else ''}",
                      f"pkill -KILL -u {u}; pkill -KILL -U {u}; sleep 0.2; "
                      f"userdel {remove_home}{u} 2>&1 | grep -v 'mail spool' >&2; "
                      f"! getent passwd {u} >/dev/null"
                      + (f" && [ ! -e {shlex.quote(home)} ]" if owns_home else ""),
                      f"! getent passwd {u} >/dev/null"))
    holder = f"{RETIRED_PREFIX}{uid}"
    h = shlex.quote(holder)
    steps.append(step(f"keep UID {uid} retired ({holder}: locked, expired, nologin, no home)",
                      f"{{ getent group {gid} >/dev/null || groupadd -g {gid} {h}; }} && "
                      f"useradd -u {uid} -g {gid} -M -d /nonexistent -s {NOLOGIN} "
                      f"-c 'UID of {user}, offboarded; never reuse' {h} && "
                      f"usermod -L {h} && chage -E 0 {h}",
                      f"getent passwd {h} >/dev/null"))
    deleted = dict(record, state="deleted", deleted_at=now, archive=archive,
                   manifest=archive + ".manifest", archive_sha256_file=archive + ".sha256",
                   custodian=custodian, retired_uid=uid, retired_by=holder)
    steps.append(step(f"mark the record deleted (archive {archive})",
                      write_file_script(record_path(user),
                                        json.dumps(deleted, ensure_ascii=False,
                                                   sort_keys=True)),
                      f"grep -q '\"state\": \"deleted\"' {shlex.quote(record_path(user))}"))
    return steps


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

    def finding(subject: str, expected: str, seen: str, severity: str = "high",
                clauses: tuple[str, ...] = ("R-OFF",)) -> None:
        found.append(Finding(CONTROL, clauses, severity, f"{user}: {subject}", expected, seen))

    a = facts.account
    if state == "deleted":
        if a is not None:
            finding("account", "deleted (record says so)", f"present (UID {a.uid})")
        if int(record.get("uid", -1)) not in facts.retired:
            finding("UID", f"{record.get('uid')} kept retired by {RETIRED_PREFIX}"
                    f"{record.get('uid')}", "no placeholder (a new account may reuse it)",
                    "medium")
        return found
    if state != "frozen" or a is None:
        if state == "frozen":
            finding("account", "frozen", "missing without a deletion record", "medium")
        return found
    sh = facts.shadow
    if sh is None or not sh.locked:
        finding("password", "locked", f"status {sh.status if sh else 'unknown'}")
    if sh is None or not sh.expired:
        finding("account expiry", "0 (expired)", (sh.expire or "never") if sh else "unknown")
    if a.shell != NOLOGIN:
        finding("login shell", NOLOGIN, a.shell)
    for path in present:
        finding("SSH keys", "none (quarantined)", path, "critical")
    for where in facts.sudoers:
        finding("sudoers rule", "none", where, "critical")
    if facts.groups:
        finding("groups", "none besides the primary group", ", ".join(facts.groups))
    for path in facts.crontabs:
        finding("crontab", "none", path)
    if facts.at_jobs:
        finding("at jobs", "none", ", ".join(facts.at_jobs))
    if facts.processes:
        finding("processes", "none", f"{len(facts.processes)} running (PIDs "
                f"{', '.join(str(p) for p in facts.processes[:10])})", "critical")
    if is_due(record, today):
        finding("deletion", f"done by {record.get('due')} (次月月底注销)",
                f"still frozen on {today.isoformat()}", "high", ("R-OFF", "R-RET"))
    return found
