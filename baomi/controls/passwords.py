"""R-PWD 密码策略: pam_pwquality length and classes, login.defs ageing, ageing of human accounts.

The control contract (:mod:`baomi.controls.contract`): ``desired`` (the drop-in, login.defs
values, ageing), ``observe_script`` (read-only commands), ``parse`` (→ :class:`Observed`),
``compare`` (→ findings of the checks below), ``skipped`` (checks with nothing to look at on
this host).  How libpwquality reads its configuration is :mod:`baomi.pwquality`; the fixes the
deploy runs are :mod:`baomi.fixes.passwords`.

The policy's ``min_length`` and ``min_classes`` are minimums: a stricter value is compliant.
Credits are pinned to 0 so ``minlen`` is a real count of characters.

Ageing is exact: ``login.defs`` (what new accounts get) and every human account's shadow
fields.  Human = uid ≥ ``accounts.min_uid`` with a login shell and a password; ``nobody``,
``nologin``/``false`` shells, accounts without a password (key-only), locked (``!hash``) and
expired (frozen) accounts are out of scope (:func:`out_of_scope` lists them with the reason),
not aged: expiring the password of a key-only account would only lock its key logins out.

The shadow file is read on the host by ``awk``, which prints the name, a password *status*
(set, empty, none, locked) and the ageing fields; field 2, the hash, never leaves the host.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from baomi import logindefs
from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.pwquality import (
    COMMON_PASSWORD,
    CREDITS,
    DEFAULT_DICT,
    FILES_COMMAND,
    LIBRARY_COMMAND,
    PWQ_CONF,
    PWQ_DIR,
    Effective,
    Line,
    PwqSetting,
    as_int,
    clamp,
    pam_lines,
    parse_files,
    parse_library,
    pwquality_line,
    read_order,
    read_pwquality,
)
from baomi.pwquality import effective as pwq_effective

CONFIG_VALID = check("passwords.config_valid",
                     "libpwquality reads its whole configuration without error")
DROPIN_FILE = check("passwords.dropin", "baomi's pwquality drop-in is in place, unedited")
MIN_LENGTH = check("passwords.min_length", "pam_pwquality minlen at least the policy's")
MIN_CLASSES = check("passwords.min_classes", "pam_pwquality minclass at least the policy's")
NO_CREDITS = check("passwords.credits", "no length credit for character classes")
ENFORCING = check("passwords.enforcing", "weak passwords refused, not only warned about")
DICTIONARY = check("passwords.dictionary", "the cracklib dictionary pam_pwquality loads exists")
PAM_STACK = check("passwords.pam_stack",
                  "pam_pwquality requisite before pam_unix, reading the default configuration")
LOGIN_DEFS_AGEING = check("passwords.login_defs", "login.defs gives new accounts the ageing")
ACCOUNT_AGEING = check("passwords.account_ageing", "every human account aged as the policy says")
EMPTY_PASSWORD = check("passwords.empty_password", "no human account with an empty password")
CHECKS = (CONFIG_VALID, DROPIN_FILE, MIN_LENGTH, MIN_CLASSES, NO_CREDITS, ENFORCING, DICTIONARY,
          PAM_STACK, LOGIN_DEFS_AGEING, ACCOUNT_AGEING, EMPTY_PASSWORD)
BY_KEY = {"minlen": MIN_LENGTH, "minclass": MIN_CLASSES, **dict.fromkeys(CREDITS, NO_CREDITS),
          "enforcing": ENFORCING}

HEADER = "# Managed by baomi: R-PWD 密码策略. Local edits are reverted.\n"
DROPIN = f"{PWQ_DIR}/50-baomi.conf"
LOGIN_DEFS = logindefs.PATH
PACKAGES = ("libpam-pwquality", "cracklib-runtime")
LOGIN_KEYS = ("PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE")
# PAM arguments that change a value we own; the deploy removes them from the module line.
OWNED_ARGS = ("minlen", "minclass", *CREDITS, "enforcing", "conf")
NOLOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")
NOBODY_UIDS = (65534, 65535)


@dataclass(frozen=True)
class Ageing:
    min_days: int
    max_days: int
    warn_days: int

    def __str__(self) -> str:
        return f"min {self.min_days}, max {self.max_days}, warn {self.warn_days} days"


@dataclass(frozen=True)
class Desired:
    """What R-PWD requires of a host."""

    min_length: int
    min_classes: int
    dropin: str
    login_defs: dict[str, str]
    ageing: Ageing
    min_uid: int


def desired(ctx: HostContext) -> Desired:
    p = ctx.policy.passwords
    settings = {"minlen": p.min_length, "minclass": p.min_classes,
                **dict.fromkeys(CREDITS, 0), "enforcing": 1}
    dropin = HEADER + "".join(f"{key} = {value}\n" for key, value in settings.items())
    return Desired(
        min_length=p.min_length,
        min_classes=p.min_classes,
        dropin=dropin,
        login_defs={"PASS_MAX_DAYS": str(p.max_days), "PASS_MIN_DAYS": str(p.min_days),
                    "PASS_WARN_AGE": str(p.warn_days)},
        ageing=Ageing(p.min_days, p.max_days, p.warn_days),
        min_uid=ctx.policy.accounts.min_uid,
    )


# Prints only: name, password status, and shadow fields 3-8.  Field 2 (the hash) is read
# here, on the host, to tell set/empty/none/locked apart, and never printed.
SHADOW_AWK = (
    "awk -F: '{ p = $2; s = \"set\"; "
    "if (p == \"\") s = \"empty\"; "
    "else if (p ~ /^[!*]/) { q = p; sub(/^!+/, \"\", q); "
    "s = (q == \"\" || q ~ /^[*]/) ? \"none\" : \"locked\" } "
    "print $1 \":\" s \":\" $3 \":\" $4 \":\" $5 \":\" $6 \":\" $7 \":\" $8 }'"
)


def observe_script(want: Desired) -> str:
    """Read-only: pwquality files and values, the PAM stack, login.defs, accounts' ageing."""
    commands = {
        "dropin": cat(DROPIN),
        "pwq_files": FILES_COMMAND,
        "pwq_lib": LIBRARY_COMMAND,
        "pam": cat(COMMON_PASSWORD),
        "dicts": f"ls -1 {DEFAULT_DICT}.pwd 2>/dev/null; true",
        "login_defs": logindefs.grep_command(LOGIN_KEYS),
        "passwd": "getent passwd | awk -F: '{print $1 \":\" $3 \":\" $7}'",
        "shadow": "[ -r /etc/shadow ] || { echo 'cannot read /etc/shadow'; exit 77; }; "
                  f"getent shadow | {SHADOW_AWK}",
        "today": "echo $(( $(date +%s) / 86400 ))",
    }
    return script(commands)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    shell: str
    status: str | None        # set, empty, none, locked; None: not in the shadow database
    last_change: int | None   # days since 1970; None: empty field (ageing off)
    min_days: int | None
    max_days: int | None
    warn_days: int | None
    expires: int | None       # account expiry, days since 1970

    @property
    def ageing(self) -> str:
        def show(v: int | None) -> str:
            return "unset" if v is None else str(v)
        return (f"min {show(self.min_days)}, max {show(self.max_days)}, "
                f"warn {show(self.warn_days)} days")


@dataclass(frozen=True)
class Observed:
    dropin: str | None
    pwq_files: dict[str, str]           # path → content, every file that may be read
    lib_values: dict[str, int] | None   # libpwquality's own reading; None when unavailable
    lib_rc: int | None
    dictpath: str                       # the cracklib dictionary pam_pwquality loads
    pam: str | None
    dict_present: bool
    login_defs: tuple[Line, ...] | None  # None: no login.defs
    accounts: tuple[Account, ...]
    shadow_error: str | None
    today: int | None


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)
    text = sec.text

    lib = sec.get("pwq_lib")
    lib_values: dict[str, int] | None = None
    lib_rc = None
    dictpath = DEFAULT_DICT
    dict_present = bool((text("dicts") or "").strip())
    if lib is not None and lib.ok:
        reading = parse_library(lib.out)
        lib_values, lib_rc = reading.values, reading.rc
        dictpath, dict_present = reading.dictpath, reading.dict_present

    ld = sec.get("login_defs")
    login = logindefs.parse(ld.out) if ld is not None and ld.ok else None

    shells: dict[str, tuple[int, str]] = {}
    order: list[str] = []
    for raw in (text("passwd") or "").splitlines():
        parts = raw.split(":")
        if len(parts) == 3 and (uid := as_int(parts[1])) is not None \
                and parts[0] not in shells:
            shells[parts[0]] = (uid, parts[2])
            order.append(parts[0])
    shadow: dict[str, list[str]] = {}
    sh = sec.get("shadow")
    shadow_error = None
    if sh is not None and sh.ok:
        for raw in sh.out.splitlines():
            parts = raw.split(":")
            if len(parts) == 8 and parts[0] not in shadow:
                shadow[parts[0]] = parts
    else:
        shadow_error = (sh.out.strip() if sh is not None else "") or "shadow not read"
    accounts = []
    for name in order:
        uid, shell = shells[name]
        s = shadow.get(name)
        accounts.append(Account(
            name=name, uid=uid, shell=shell,
            status=s[1] if s else None,
            last_change=as_int(s[2]) if s else None,
            min_days=as_int(s[3]) if s else None,
            max_days=as_int(s[4]) if s else None,
            warn_days=as_int(s[5]) if s else None,
            expires=as_int(s[7]) if s else None,
        ))
    return Observed(
        dropin=text("dropin"),
        pwq_files=parse_files(text("pwq_files")),
        lib_values=lib_values,
        lib_rc=lib_rc,
        dictpath=dictpath,
        pam=text("pam"),
        dict_present=dict_present,
        login_defs=login,
        accounts=tuple(accounts),
        shadow_error=shadow_error,
        today=as_int(text("today") or ""),
    )


def effective(seen: Observed) -> dict[str, Effective]:
    """The value pam_pwquality uses for each owned key, and where it came from."""
    return pwq_effective(seen.pwq_files, seen.lib_values, seen.pam)


def overriding(seen: Observed, keys: set[str]) -> list[PwqSetting]:
    """Settings read after our drop-in for one of ``keys`` (they win over it)."""
    order = read_order(seen.pwq_files)
    after = order[order.index(DROPIN) + 1:] if DROPIN in order else order
    return [s for s in read_pwquality(seen.pwq_files).settings
            if s.key in keys and s.line.path in after]


def weak(want: Desired, key: str, value: int) -> bool:
    """Whether ``value`` for ``key`` falls short of the policy."""
    if key == "minlen":
        return clamp(key, value) < want.min_length
    if key == "minclass":
        return clamp(key, value) < want.min_classes
    if key in CREDITS:
        return value > 0
    return key == "enforcing" and value == 0


# --- compare ------------------------------------------------------------------------------

def _source(e: Effective) -> str:
    return f"{e.value} ({'the built-in default' if e.source == 'default' else e.source})"


def config_error(seen: Observed) -> Finding | None:
    """The line that stops libpwquality's reading (the library's own word when available)."""
    reading = read_pwquality(seen.pwq_files)
    if seen.lib_rc == 0:
        return None
    if reading.error is not None:
        lost = ", ".join(reading.unread) or "none"
        return CONFIG_VALID.finding(
            f"pwquality {reading.error.where}", "a valid setting",
            f"{reading.error.text.strip()!r}: libpwquality stops reading there "
            f"(files not read: {lost})")
    if seen.lib_rc is not None:
        return CONFIG_VALID.finding("pwquality configuration", "read without error",
                                    f"libpwquality error {seen.lib_rc}")
    return None


def quality_findings(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    reading = config_error(seen)
    if reading is not None:
        findings.append(reading)
    if seen.dropin != want.dropin:
        findings.append(DROPIN_FILE.finding(
            DROPIN, "the baomi content", "missing" if seen.dropin is None else "edited content",
            "medium"))
    line = pwquality_line(seen.pam)
    if line is not None and line.arg("conf") is not None:
        findings.append(PAM_STACK.finding(
            f"pam_pwquality conf= ({line.line.where})",
            f"the default configuration ({PWQ_CONF} and {PWQ_DIR})",
            f"conf={line.arg('conf')}: {DROPIN} is not read"))
    eff = effective(seen)
    expected = {"minlen": f"at least {want.min_length}",
                "minclass": f"at least {want.min_classes}",
                **dict.fromkeys(CREDITS, "0 or less (no length credit)"),
                "enforcing": "1 (weak passwords refused)"}
    for key, words in expected.items():
        if weak(want, key, eff[key].value):
            findings.append(BY_KEY[key].finding(f"pam_pwquality {key}", words, _source(eff[key]),
                                                "critical" if key == "enforcing" else "high"))
    if dictionary_missing(seen):
        findings.append(DICTIONARY.finding(
            "pam_pwquality dictionary", f"{seen.dictpath}.pwd (package cracklib-runtime) or "
            "dictcheck = 0", "missing: every password change by a user is refused", "critical"))
    findings.extend(pam_findings(seen))
    return findings


def dictionary_missing(seen: Observed) -> bool:
    return effective(seen)["dictcheck"].value != 0 and not seen.dict_present


def pam_findings(seen: Observed) -> list[Finding]:
    expected = "an active 'password requisite pam_pwquality.so' line before pam_unix.so"
    if seen.pam is None:
        return [PAM_STACK.finding(COMMON_PASSWORD, expected, "missing", "critical")]
    lines = pam_lines(seen.pam)
    line = pwquality_line(seen.pam)
    if line is None:
        return [PAM_STACK.finding(COMMON_PASSWORD, expected, "no pam_pwquality.so line: "
                                  "password quality is not checked", "critical")]
    findings = []
    if line.control not in ("requisite", "required"):
        findings.append(PAM_STACK.finding(COMMON_PASSWORD, expected,
                                          f"'{line.control}' at line {line.line.number}: a "
                                          "weak password is not refused", "critical"))
    unix = next((p for p in lines if p.module == "pam_unix.so"), None)
    if unix is not None and unix.line.number < line.line.number:
        findings.append(PAM_STACK.finding(COMMON_PASSWORD, expected,
                                          f"pam_pwquality.so at line {line.line.number} after "
                                          f"pam_unix.so at line {unix.line.number}", "critical"))
    return findings


def login_defs_findings(want: Desired, seen: Observed) -> list[Finding]:
    return logindefs.findings(LOGIN_DEFS_AGEING, want.login_defs, seen.login_defs)


def _date(days: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()


def scope(want: Desired, account: Account, today: int | None) -> str | None:
    """None when ageing applies to ``account``; otherwise why not (for :func:`out_of_scope`).

    Accounts below ``min_uid`` are system accounts and give the empty string (not listed).
    """
    if account.uid < want.min_uid:
        return ""
    who = f"{account.name} (uid {account.uid})"
    if account.uid in NOBODY_UIDS:
        return f"{who}: the unprivileged placeholder account"
    shell = account.shell.rsplit("/", 1)[-1]
    if shell in NOLOGIN_SHELLS:
        return f"{who}: no login shell ({account.shell})"
    if account.status is None:
        return f"{who}: not in the local shadow database (managed elsewhere)"
    if account.status == "none":
        return f"{who}: no password (key-only or never set); password ageing does not apply"
    if account.status == "locked":
        return f"{who}: password locked"
    if account.expires is not None and today is not None and account.expires <= today:
        return f"{who}: account expired (frozen) on {_date(account.expires)}"
    return None


def aged(want: Desired, seen: Observed) -> list[Account]:
    """The human accounts whose password ageing R-PWD sets."""
    return [a for a in seen.accounts if scope(want, a, seen.today) is None]


def out_of_scope(want: Desired, seen: Observed) -> list[str]:
    """Accounts at or above ``min_uid`` that ageing does not apply to, with the reason.

    Information for the report, not "not applicable": the ageing checks still judge every
    account in scope.
    """
    reasons = (scope(want, a, seen.today) for a in seen.accounts)
    return [r for r in reasons if r]


def drifting(want: Desired, account: Account) -> bool:
    a = want.ageing
    return (account.min_days, account.max_days, account.warn_days) != (
        a.min_days, a.max_days, a.warn_days) or account.last_change is None


def account_findings(want: Desired, seen: Observed) -> list[Finding]:
    if seen.shadow_error is not None:
        return [ACCOUNT_AGEING.finding("/etc/shadow", "readable (the check runs as root)",
                                       seen.shadow_error)]
    findings = []
    for account in aged(want, seen):
        subject = f"account {account.name} (uid {account.uid})"
        if account.status == "empty":
            findings.append(EMPTY_PASSWORD.finding(
                subject, "a password, or a locked account", "an empty password: it logs in "
                "without one (set one or lock it: baomi does not choose for you)", "critical"))
        if drifting(want, account) and account.last_change is not None:
            findings.append(ACCOUNT_AGEING.finding(subject, f"password ageing {want.ageing}",
                                                   account.ageing))
        elif account.last_change is None:
            findings.append(ACCOUNT_AGEING.finding(
                subject, f"password ageing {want.ageing} from a last-change date",
                f"{account.ageing}, no last-change date: ageing is off"))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return (quality_findings(want, seen) + login_defs_findings(want, seen)
            + account_findings(want, seen))


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Checks with nothing to look at: no human account to age, no dictionary to load."""
    out: dict[str, str] = {}
    if seen.shadow_error is None and not aged(want, seen):
        reason = f"no human account (uid ≥ {want.min_uid} with a login shell and a password)"
        listed = out_of_scope(want, seen)
        if listed:
            reason += "; out of scope: " + "; ".join(listed)
        out[ACCOUNT_AGEING.id] = out[EMPTY_PASSWORD.id] = reason
    dictcheck = effective(seen)["dictcheck"]
    if dictcheck.value == 0:
        out[DICTIONARY.id] = f"dictcheck = 0 ({dictcheck.source}): no dictionary is loaded"
    return out


CONTROL: Control[Desired, Observed] = Control(
    "passwords", CHECKS, desired, observe_script, parse, compare, skipped=skipped)
