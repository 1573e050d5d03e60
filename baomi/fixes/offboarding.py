"""R-OFF 离职帐号冻结与注销, R-RET 清退客户资料: the freeze and purge of a departed user, as steps.

:func:`freeze_steps` and :func:`purge_steps` give the ordered :class:`Step` list from the
facts :mod:`baomi.offboarding` read: what, which clause, a shell ``command`` and a shell
``done`` test that succeeds when the step is already true.  Any runner executes a step as
"unless ``done`` succeeds, run ``command``": pyinfra over SSH (``deploy/offboarding.py``)
today, the agent locally on endpoints that were offline later, so there is one implementation
of what freezing means.  The records go through :func:`baomi.fixes.install.install_file`; the
sudoers rules are disabled by editing the host's own files in place (a copy, ``visudo -cqf``
on it, then a rename), since their other lines are the host's and must stay as they are.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from baomi.fixes.install import install_file
from baomi.offboarding import (
    CLAUSES,
    NOLOGIN,
    QUARANTINE_DIR,
    RETIRED_PREFIX,
    STATE_DIR,
    Facts,
    due_date,
    ere,
    keys_paths,
    log_path,
    quarantine,
    record_path,
)
from baomi.policy import Policy

# The host-side program for the user's files (baomi/hostside/offboard_files.py): every path
# opened one component at a time without following a link; shipped as text (python3 -c).
FILES = (Path(__file__).parents[1] / "hostside" / "offboard_files.py").read_text(
    encoding="utf-8")
# The archive step's bound: a purge must end (a hung one blocked every later purge).
ARCHIVE_SECONDS = 3 * 3600


def files_program(*args: str) -> str:
    return " ".join(["python3", "-c", shlex.quote(FILES), *(shlex.quote(a) for a in args)])


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
                      write_record_script(record_path(user), record),
                      f"[ -s {shlex.quote(record_path(user))} ]"))
    for index, path in enumerate(keys_paths(facts.keys_files, a)):
        # Never through a link: a link inside the home is itself quarantined, its target left.
        dest = f"{q}/ssh-{index}-{path.rsplit('/', 1)[-1]}"
        steps.append(step(f"move {path} to the quarantine",
                          files_program("quarantine", str(a.uid), a.home, path, dest),
                          files_program("keys-done", a.home, path)))
    if facts.sudoers:
        files = sorted({x.split(":", 1)[0] for x in facts.sudoers})
        cmds = []
        for f in files:
            qf = shlex.quote(f)
            new = shlex.quote(f + ".baomi-new")
            cmds.append(f"cp -p {qf} {new} && sed -i -E 's/^([[:space:]]*{ere(user)}[[:space:]])/"
                        f"# baomi offboarded {user}: \\1/' {new} && visudo -cqf {new} "
                        f"&& mv -f {new} {qf}")
        steps.append(step(f"disable the sudoers rules of {user} ({', '.join(files)})",
                          " && ".join(cmds),
                          f"! grep -qE '^[[:space:]]*{ere(user)}[[:space:]]' "
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


def write_record_script(path: str, record: dict[str, Any]) -> str:
    """A record as one JSON line, root-only (0600), atomically."""
    return install_file(path, json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n",
                        mode="0600")


def cancel_steps(record: dict[str, Any], ticket: str, operator: str, reason: str,
                 now: str) -> list[Step]:
    """The host's record marked cancelled (kept, with who, when and why): no purge deletes the
    account afterwards. The freeze itself is not undone (access is granted again by a request)."""
    user = str(record["user"])
    cancelled = dict(record, state="cancelled", cancelled_at=now, cancel_ticket=ticket,
                     cancelled_by=operator, cancel_reason=reason)
    path = shlex.quote(record_path(user))
    return [Step(user, "cancel", f"mark the record cancelled (ticket {ticket}): never purged",
                 "R-OFF", write_record_script(record_path(user), cancelled),
                 f"grep -q '\"state\": \"cancelled\"' {path}")]


def archive_name(record: dict[str, Any]) -> str:
    return (f"{policy_safe(record['user'])}-uid{int(record['uid'])}-"
            f"frozen{str(record['frozen_at'])[:10]}.tar.gz")


def policy_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def still_frozen(user: str, uid: int) -> str:
    """Shell that exits 1 (naming why) unless USER is absent or still the account that was
    frozen: UID as recorded, password locked, expired, nologin. Each purge step runs it first,
    in the same script that acts, so a rehire (same name, new UID) or a freeze undone by hand
    since the purge was prepared is never archived, handed over or deleted."""
    u = shlex.quote(user)  # a valid name (refusal() checked it): safe inside "..." too

    def need(test: str, what: str) -> str:
        return (f"{test} || {{ echo \"{user}: {what}: not purged (baomi offboard {user} "
                f"--cancel --ticket T if it is to stay)\" >&2; exit 1; }}")

    return (f"if p=$(getent passwd {u}); then "
            f"i=$(printf %s \"$p\" | cut -d: -f3); sh=$(printf %s \"$p\" | cut -d: -f7); "
            f"l=$(passwd -S {u} | awk '{{print $2}}'); e=$(getent shadow {u} | cut -d: -f8); "
            + need(f'[ "$i" = {uid} ]', f"UID $i, the frozen account's was {uid} (rehired?)")
            + "; " + need('[ "$l" = L ]', "password not locked (status $l)")
            + "; " + need('[ "$e" = 0 ]', "account not expired")
            + "; " + need(f'[ "$sh" = {NOLOGIN} ]', f"login shell $sh, not {NOLOGIN}")
            + "; fi")


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
    find_sensitive = " ".join(shlex.quote(p) for p in sensitive)
    guard = still_frozen(user, uid)

    def step(what: str, command: str, done: str, clause: str = "R-OFF") -> Step:
        return Step(user, "purge", what, clause, f"{guard}; {command}", done)

    steps = [
        step(f"archive the home and the files under sensitive paths to {archive} "
             f"(SHA-256 manifest, custodian {custodian})",
             f"getent passwd {c} >/dev/null || {{ echo 'custodian {custodian} has no account "
             f"on this host' >&2; exit 1; }}; "
             f"install -d -m 0700 -o {c} -g root {shlex.quote(archive_dir)} && "
             f"timeout --kill-after=30 {ARCHIVE_SECONDS} "
             + files_program("archive", str(uid), home if owns_home else "", quarantine(user),
                             custodian, archive, *sensitive),
             f"[ -s {qa} ] && [ -e {manifest} ] && [ -s {qa}.sha256 ]", clause="R-RET"),
    ]
    if sensitive:
        steps.append(step(f"hand {user}'s files under sensitive paths to the custodian "
                          f"{custodian}",
                          f"find -P {find_sensitive} -xdev -uid {uid} -exec chown -h {c} {{}} + "
                          "2>/dev/null; true",
                          f"! find -P {find_sensitive} -xdev -uid {uid} 2>/dev/null | grep -q .",
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
                      write_record_script(record_path(user), deleted),
                      f"grep -q '\"state\": \"deleted\"' {shlex.quote(record_path(user))}"))
    return steps
