"""R-ACL 访问控制: files people create are never world-readable (default umask from the policy,
027); R-PWD 密码策略: password hashes cost what the policy says to crack.

Where each value takes effect on Debian:

- ``/etc/login.defs`` ``UMASK`` is read by ``pam_umask`` in the PAM session (ssh, login, su,
  cron), so ``session optional pam_umask.so`` must be in ``common-session`` and
  ``common-session-noninteractive``; a ``umask=`` argument there would override login.defs.
  (With ``USERGROUPS_ENAB yes`` pam_umask gives a user whose primary group is their own the
  group bits of the owner: 027 becomes 007, still nothing for others.)
- the hash of a password set with ``passwd``/``chpasswd`` is made by ``pam_unix`` in
  ``common-password`` with its own method word (``yescrypt``) and ``rounds=`` (the yescrypt cost
  factor or SHA-512 rounds): login.defs ``YESCRYPT_COST_FACTOR`` alone does not change it
  (measured on a lab host: ``$y$j9T$`` before and after); login.defs is set too, for shadow's
  own tools (``newusers``, ``chpasswd -c``).

The control contract (:mod:`baomi.controls.contract`); the edits are in
:mod:`baomi.fixes.login_defaults`.  Never reads a hash: only the files above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from baomi import logindefs
from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.pwquality import COMMON_PASSWORD, Line, PamLine, pam_lines

UMASK = check("login_defaults.umask", "login.defs UMASK is the policy's", ("R-ACL",))
PAM_UMASK = check("login_defaults.pam_umask",
                  "PAM sessions apply login.defs UMASK (pam_umask, no umask= override)",
                  ("R-ACL",))
HASH_DEFAULTS = check("login_defaults.hash_defaults",
                      "login.defs ENCRYPT_METHOD and its cost are the policy's", ("R-PWD",))
PAM_HASH = check("login_defaults.pam_hash",
                 "pam_unix hashes new passwords with the policy's method and rounds", ("R-PWD",))
CHECKS = (UMASK, PAM_UMASK, HASH_DEFAULTS, PAM_HASH)

SESSIONS = ("/etc/pam.d/common-session", "/etc/pam.d/common-session-noninteractive")
PAM_UMASK_LINE = "session\toptional\tpam_umask.so"
METHOD_WORDS = ("yescrypt", "sha512", "sha256", "md5", "bigcrypt", "blowfish", "gost_yescrypt")
KEYS = ("UMASK", "ENCRYPT_METHOD", "YESCRYPT_COST_FACTOR", "SHA_CRYPT_MIN_ROUNDS",
        "SHA_CRYPT_MAX_ROUNDS")


@dataclass(frozen=True)
class Desired:
    umask: dict[str, str]          # login.defs key -> value (R-ACL)
    hashing: dict[str, str]        # login.defs keys -> values (R-PWD)
    pam_method: str                # pam_unix method word
    pam_rounds: str                # pam_unix rounds=


def desired(ctx: HostContext) -> Desired:
    d = ctx.policy.login_defaults
    if d.hash_method == "YESCRYPT":
        hashing = {"ENCRYPT_METHOD": "YESCRYPT",
                   "YESCRYPT_COST_FACTOR": str(d.yescrypt_cost_factor)}
        rounds = str(d.yescrypt_cost_factor)
    else:
        hashing = {"ENCRYPT_METHOD": "SHA512", "SHA_CRYPT_MIN_ROUNDS": str(d.sha_crypt_rounds),
                   "SHA_CRYPT_MAX_ROUNDS": str(d.sha_crypt_rounds)}
        rounds = str(d.sha_crypt_rounds)
    return Desired({"UMASK": d.umask}, hashing, d.hash_method.lower(), rounds)


def observe_script(want: Desired | None = None) -> str:
    return script({
        "login_defs": logindefs.grep_command(KEYS),
        "password": cat(COMMON_PASSWORD),
        **{f"session{i}": cat(path) for i, path in enumerate(SESSIONS)},
    })


@dataclass(frozen=True)
class Observed:
    login_defs: tuple[Line, ...] | None
    password: str | None
    sessions: dict[str, str | None]     # path -> content (None: missing)


def parse(output: str, want: Desired | None = None) -> Observed:
    sec = sections(output)
    ld = sec.get("login_defs")
    return Observed(
        login_defs=logindefs.parse(ld.out) if ld is not None and ld.ok else None,
        password=sec.text("password"),
        sessions={path: sec.text(f"session{i}") for i, path in enumerate(SESSIONS)},
    )


_SESSION = re.compile(r"^-?session\s+(\[[^\]]*\]|\S+)\s+(\S*pam_umask\.so)\b\s*(.*)$")


def umask_lines(text: str | None, path: str) -> list[tuple[Line, str]]:
    """Active pam_umask session lines of a file, with their arguments."""
    found = []
    for number, raw in enumerate((text or "").split("\n"), 1):
        m = _SESSION.match(raw.split("#", 1)[0].strip())
        if m:
            found.append((Line(path, number, raw), m[3]))
    return found


def unix_line(password: str | None) -> PamLine | None:
    return next((p for p in pam_lines(password) if p.module == "pam_unix.so"), None)


def pam_hash_problem(want: Desired, line: PamLine | None) -> str | None:
    """What is wrong with pam_unix's hashing arguments, or None."""
    if line is None:
        return "no pam_unix.so password line"
    methods = [a for a in line.args if a in METHOD_WORDS]
    rounds = line.arg("rounds")
    if methods != [want.pam_method] or rounds != want.pam_rounds:
        return (f"{' '.join(methods) or 'no method'}, rounds={rounds or 'unset'} "
                f"(line {line.line.number})")
    return None


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings = logindefs.findings(UMASK, want.umask, seen.login_defs, "high")
    findings += logindefs.findings(HASH_DEFAULTS, want.hashing, seen.login_defs)
    for path, text in seen.sessions.items():
        lines = umask_lines(text, path)
        if text is None:
            findings.append(PAM_UMASK.finding(path, PAM_UMASK_LINE, "file missing"))
        elif not lines:
            findings.append(PAM_UMASK.finding(path, PAM_UMASK_LINE, "no pam_umask line"))
        for line, args in lines:
            if "umask=" in args:
                findings.append(PAM_UMASK.finding(line.where, "no umask= (login.defs UMASK "
                                                  f"{want.umask['UMASK']} applies)", args))
    problem = pam_hash_problem(want, unix_line(seen.password))
    if problem:
        findings.append(PAM_HASH.finding(
            f"{COMMON_PASSWORD} pam_unix.so", f"{want.pam_method} rounds={want.pam_rounds}",
            problem if seen.password is not None else "file missing"))
    return findings


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    line = unix_line(seen.password)
    return {PAM_HASH.id: f"pam_unix.so {' '.join(line.args)}"} if line else {}


CONTROL: Control[Desired, Observed] = Control(
    "login_defaults", CHECKS, desired, observe_script, parse, compare, evidence=evidence)
