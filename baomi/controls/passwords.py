"""R-PWD 密码策略: pam_pwquality length and classes, login.defs ageing, ageing of human accounts.

Pure functions only: ``desired`` (policy → the drop-in, login.defs values, ageing),
``observe_script`` (read-only commands) and ``parse`` (their output → :class:`Observed`),
``compare`` (→ findings), ``skipped`` (accounts ageing does not apply to, with the reason).
``deploy/passwords.py``, ``checks/test_passwords.py`` and the agent run them.

Where pam_pwquality's settings come from (libpwquality 1.4): the ``*.conf`` files of
``/etc/security/pwquality.conf.d`` in byte order, *then* ``/etc/security/pwquality.conf`` (so
the main file wins over every drop-in), then the module's arguments in ``common-password``
(which win over both).  The first malformed line stops the reading: nothing after it counts.
The check therefore asks the library itself for the values it reads (``python3`` + ctypes on
``libpwquality.so.1``), applies the PAM arguments on top, and names the file and line that set
each value.  The policy's ``min_length`` and ``min_classes`` are minimums: a stricter value is
compliant.  Credits are pinned to 0 so ``minlen`` is a real count of characters.

Ageing is exact: ``login.defs`` (what new accounts get) and every human account's shadow
fields.  Human = uid ≥ ``accounts.min_uid`` with a login shell and a password; ``nobody``,
``nologin``/``false`` shells, accounts without a password (key-only), locked (``!hash``) and
expired (frozen) accounts are listed as skipped, not aged: expiring the password of a key-only
account would only lock its key logins out.

The shadow file is read on the host by ``awk``, which prints the name, a password *status*
(set, empty, none, locked) and the ageing fields; field 2, the hash, never leaves the host.
"""

from __future__ import annotations

import datetime
import re
import shlex
from dataclasses import dataclass

from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

CONTROL = "passwords"
CLAUSES = ("R-PWD",)
HEADER = "# Managed by baomi: R-PWD 密码策略. Local edits are reverted.\n"

PWQ_CONF = "/etc/security/pwquality.conf"
PWQ_DIR = PWQ_CONF + ".d"
DROPIN = f"{PWQ_DIR}/50-baomi.conf"
COMMON_PASSWORD = "/etc/pam.d/common-password"
LOGIN_DEFS = "/etc/login.defs"
PACKAGES = ("libpam-pwquality", "cracklib-runtime")
DEFAULT_DICT = "/var/cache/cracklib/cracklib_dict"

LOGIN_KEYS = ("PASS_MAX_DAYS", "PASS_MIN_DAYS", "PASS_WARN_AGE")
CREDITS = ("dcredit", "ucredit", "lcredit", "ocredit")
# What pam_pwquality uses when nothing sets a value (libpwquality 1.4).
PWQ_DEFAULTS = {"minlen": 8, "minclass": 0, "dcredit": 0, "ucredit": 0, "lcredit": 0,
                "ocredit": 0, "enforcing": 1, "dictcheck": 1}
# PWQ_SETTING_* numbers of pwquality.h, for pwquality_get_int_value.
_PWQ_IDS = {"minlen": 3, "dcredit": 4, "ucredit": 5, "lcredit": 6, "ocredit": 7,
            "minclass": 8, "dictcheck": 15, "enforcing": 17}
_PWQ_INT = ("difok", "minlen", "dcredit", "ucredit", "lcredit", "ocredit", "minclass",
            "maxrepeat", "maxclassrepeat", "maxsequence", "gecoscheck", "dictcheck",
            "usercheck", "usersubstr", "enforcing", "retry")
_PWQ_FLAG = ("enforce_for_root", "local_users_only")
_PWQ_STR = ("badwords", "dictpath")
# PAM arguments that change a value we own; the deploy removes them from the module line.
OWNED_ARGS = ("minlen", "minclass", *CREDITS, "enforcing", "conf")
NOLOGIN_SHELLS = ("nologin", "false", "sync", "halt", "shutdown")
NOBODY_UIDS = (65534, 65535)
FILE_MARK = "--- baomi file: "


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


def desired(policy: Policy, groups: set[str]) -> Desired:
    p = policy.passwords
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
        min_uid=policy.accounts.min_uid,
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

# Asks libpwquality which values it reads from its configuration (no PAM arguments).
_PWQ_PY = (
    "import ctypes, os\n"
    "try:\n"
    "    lib = ctypes.CDLL('libpwquality.so.1')\n"
    "except OSError:\n"
    "    raise SystemExit(3)\n"
    "lib.pwquality_default_settings.restype = ctypes.c_void_p\n"
    "pwq = ctypes.c_void_p(lib.pwquality_default_settings())\n"
    "print('rc', lib.pwquality_read_config(pwq, None, None))\n"
    f"for name, number in {sorted(_PWQ_IDS.items())!r}:\n"
    "    value = ctypes.c_int()\n"
    "    if lib.pwquality_get_int_value(pwq, number, ctypes.byref(value)) == 0:\n"
    "        print(name, value.value)\n"
    "path = ctypes.c_char_p()\n"
    "lib.pwquality_get_str_value(pwq, 10, ctypes.byref(path))\n"
    f"dictpath = path.value.decode() if path.value else {DEFAULT_DICT!r}\n"
    "print('dict', int(os.path.exists(dictpath + '.pwd')), dictpath)\n"
)


def observe_script() -> str:
    """Read-only: pwquality files and values, the PAM stack, login.defs, accounts' ageing."""
    commands = {
        "dropin": cat(DROPIN),
        # Every file libpwquality may read, in any order (parse sorts them as it does).
        "pwq_files": f"for f in $(find {PWQ_DIR} -mindepth 1 -maxdepth 1 -name '*.conf' "
                     f"2>/dev/null) {PWQ_CONF}; do [ -f \"$f\" ] || continue; "
                     f"printf '%s%s\\n' '{FILE_MARK}' \"$f\"; cat \"$f\"; echo; done",
        "pwq_lib": f"command -v python3 >/dev/null || exit 3; python3 -c {shlex.quote(_PWQ_PY)}",
        "pam": cat(COMMON_PASSWORD),
        "dicts": f"ls -1 {DEFAULT_DICT}.pwd 2>/dev/null; true",
        "login_defs": f"[ -e {LOGIN_DEFS} ] || exit 2; grep -nE '^[[:space:]]*("
                      + "|".join(LOGIN_KEYS) + f")([[:space:]]|$)' {LOGIN_DEFS}; true",
        "passwd": "getent passwd | awk -F: '{print $1 \":\" $3 \":\" $7}'",
        "shadow": "[ -r /etc/shadow ] || { echo 'cannot read /etc/shadow'; exit 77; }; "
                  f"getent shadow | {SHADOW_AWK}",
        "today": "echo $(( $(date +%s) / 86400 ))",
    }
    return script(commands)


@dataclass(frozen=True)
class Line:
    """One line of a configuration file."""

    path: str
    number: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


@dataclass(frozen=True)
class PwqSetting:
    key: str
    value: str
    line: Line


@dataclass(frozen=True)
class PamLine:
    line: Line
    control: str
    module: str
    args: tuple[str, ...]

    def arg(self, key: str) -> str | None:
        value = None
        for a in self.args:
            name, eq, v = a.partition("=")
            if name.lower() == key and (eq or key in _PWQ_FLAG):
                value = v
        return value


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


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def parse(output: str) -> Observed:
    sec = sections(output)

    text = sec.text

    files: dict[str, str] = {}
    current: str | None = None
    chunks: list[str] = []
    for raw in (text("pwq_files") or "").split("\n"):
        if raw.startswith(FILE_MARK):
            if current is not None:
                files[current] = "\n".join(chunks)
            current, chunks = raw[len(FILE_MARK):], []
        elif current is not None:
            chunks.append(raw)
    if current is not None:
        files[current] = "\n".join(chunks)
    # `cat` then `echo`: drop the separating newline we added.
    files = {p: (c[:-1] if c.endswith("\n") else c) for p, c in files.items()}

    lib = sec.get("pwq_lib")
    lib_values: dict[str, int] | None = None
    lib_rc = None
    dictpath = DEFAULT_DICT
    dict_present = bool((text("dicts") or "").strip())
    if lib is not None and lib.ok:
        lib_values = {}
        for raw in lib.out.splitlines():
            key, _, value = raw.strip().partition(" ")
            if key == "rc":
                lib_rc = _int(value)
            elif key == "dict":
                present, _, path = value.partition(" ")
                dict_present, dictpath = present == "1", path.strip() or DEFAULT_DICT
            elif key in _PWQ_IDS and _int(value) is not None:
                lib_values[key] = int(value)

    login: tuple[Line, ...] | None = None
    ld = sec.get("login_defs")
    if ld is not None and ld.ok:
        found = []
        for raw in ld.out.splitlines():
            number, _, rest = raw.partition(":")
            if number.isdigit():
                found.append(Line(LOGIN_DEFS, int(number), rest))
        login = tuple(found)

    shells: dict[str, tuple[int, str]] = {}
    order: list[str] = []
    for raw in (text("passwd") or "").splitlines():
        parts = raw.split(":")
        if len(parts) == 3 and _int(parts[1]) is not None and parts[0] not in shells:
            shells[parts[0]] = (int(parts[1]), parts[2])
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
            last_change=_int(s[2]) if s else None,
            min_days=_int(s[3]) if s else None,
            max_days=_int(s[4]) if s else None,
            warn_days=_int(s[5]) if s else None,
            expires=_int(s[7]) if s else None,
        ))
    today = _int(text("today") or "")
    return Observed(
        dropin=text("dropin"),
        pwq_files=files,
        lib_values=lib_values,
        lib_rc=lib_rc,
        dictpath=dictpath,
        pam=text("pam"),
        dict_present=dict_present,
        login_defs=login,
        accounts=tuple(accounts),
        shadow_error=shadow_error,
        today=today,
    )


# --- pwquality: which files are read, in which order, and what they set ------------------

def _conf_name_ok(name: str) -> bool:
    """libpwquality's filter: the first '.conf' in the name must end it."""
    at = name.find(".conf")
    return at >= 0 and at + 5 == len(name)


def read_order(files: dict[str, str]) -> list[str]:
    """The files libpwquality reads: drop-ins by byte order of their names, then the main file."""
    dropins = sorted((p for p in files if p.startswith(PWQ_DIR + "/")
                      and _conf_name_ok(p[len(PWQ_DIR) + 1:])),
                     key=lambda p: p.encode())
    return dropins + ([PWQ_CONF] if PWQ_CONF in files else [])


@dataclass(frozen=True)
class PwqReading:
    settings: tuple[PwqSetting, ...]   # every setting read, in reading order
    error: Line | None                 # the line that stopped the reading
    unread: tuple[str, ...]            # files never reached because of it


def _valid(key: str, value: str) -> bool:
    k = key.lower()
    if k in _PWQ_INT:
        return re.fullmatch(r"-?\d+", value) is not None
    return k in _PWQ_FLAG or k in _PWQ_STR


def read_pwquality(files: dict[str, str]) -> PwqReading:
    """Mimic libpwquality's reader: '#' starts a comment, NAME [=] VALUE, stop at an error.

    Used to name the line that set a value; the values themselves come from the library when
    the host has python3 (``Observed.lib_values``).
    """
    settings: list[PwqSetting] = []
    order = read_order(files)
    for index, path in enumerate(order):
        for number, raw in enumerate(files[path].split("\n"), 1):
            body = raw.split("#", 1)[0].strip()
            if not body:
                continue
            # The name ends at a blank or '='; then blanks and at most one '=' are skipped.
            key = re.split(r"[\s=]", body, maxsplit=1)[0]
            value = re.sub(r"^\s*(=\s*)?", "", body[len(key) + 1:])
            line = Line(path, number, raw)
            if not _valid(key, value):
                return PwqReading(tuple(settings), line, tuple(order[index + 1:]))
            settings.append(PwqSetting(key.lower(), value, line))
    return PwqReading(tuple(settings), None, ())


def pam_lines(pam: str | None) -> list[PamLine]:
    """Active ``password`` lines of common-password, in order."""
    found = []
    for number, raw in enumerate((pam or "").split("\n"), 1):
        body = raw.split("#", 1)[0].strip()
        m = re.match(r"^-?password\s+(\[[^\]]*\]|\S+)\s+(\S+)\s*(.*)$", body)
        if m:
            module = m[2].rsplit("/", 1)[-1]
            found.append(PamLine(Line(COMMON_PASSWORD, number, raw), m[1], module,
                                 tuple(m[3].split())))
    return found


def pwquality_line(pam: str | None) -> PamLine | None:
    return next((p for p in pam_lines(pam) if p.module == "pam_pwquality.so"), None)


def _clamp(key: str, value: int) -> int:
    if key == "minlen":
        return max(value, 6)
    if key == "minclass":
        return min(value, 4)
    return value


@dataclass(frozen=True)
class Effective:
    value: int
    source: str   # "default", "FILE:LINE", or "COMMON_PASSWORD:LINE argument"


def effective(seen: Observed) -> dict[str, Effective]:
    """The value pam_pwquality uses for each owned key, and where it came from."""
    reading = read_pwquality(seen.pwq_files)
    out: dict[str, Effective] = {k: Effective(v, "default") for k, v in PWQ_DEFAULTS.items()}
    for s in reading.settings:
        if s.key in out:
            out[s.key] = Effective(_clamp(s.key, int(s.value)), s.line.where)
    if seen.lib_values is not None:
        # The library's own reading is the truth; ours only names the source.
        for key, value in seen.lib_values.items():
            if key in out and out[key].value != value:
                out[key] = Effective(value, "libpwquality")
    line = pwquality_line(seen.pam)
    if line is not None:
        for key in out:
            arg = line.arg(key)
            if arg is not None and _int(arg) is not None:
                out[key] = Effective(_clamp(key, int(arg)),
                                     f"{line.line.where} argument {key}={arg}")
    return out


def overriding(seen: Observed, keys: set[str]) -> list[PwqSetting]:
    """Settings read after our drop-in for one of ``keys`` (they win over it)."""
    order = read_order(seen.pwq_files)
    after = order[order.index(DROPIN) + 1:] if DROPIN in order else order
    return [s for s in read_pwquality(seen.pwq_files).settings
            if s.key in keys and s.line.path in after]


def _weak(want: Desired, key: str, value: int) -> bool:
    """Whether ``value`` for ``key`` falls short of the policy."""
    if key == "minlen":
        return _clamp(key, value) < want.min_length
    if key == "minclass":
        return _clamp(key, value) < want.min_classes
    if key in CREDITS:
        return value > 0
    return key == "enforcing" and value == 0


# --- compare ------------------------------------------------------------------------------

def _finding(subject: str, expected: str, found: str, severity: str = "high") -> Finding:
    return Finding(CONTROL, CLAUSES, severity, subject, expected, found)


def _source(e: Effective) -> str:
    return f"{e.value} ({'the built-in default' if e.source == 'default' else e.source})"


def config_error(seen: Observed) -> Finding | None:
    """The line that stops libpwquality's reading (the library's own word when available)."""
    reading = read_pwquality(seen.pwq_files)
    if seen.lib_rc == 0:
        return None
    if reading.error is not None:
        lost = ", ".join(reading.unread) or "none"
        return _finding(f"pwquality {reading.error.where}", "a valid setting",
                        f"{reading.error.text.strip()!r}: libpwquality stops reading there "
                        f"(files not read: {lost})")
    if seen.lib_rc is not None:
        return _finding("pwquality configuration", "read without error",
                        f"libpwquality error {seen.lib_rc}")
    return None


def quality_findings(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    reading = config_error(seen)
    if reading is not None:
        findings.append(reading)
    if seen.dropin != want.dropin:
        findings.append(_finding(DROPIN, "the baomi content",
                                 "missing" if seen.dropin is None else "edited content",
                                 "medium"))
    line = pwquality_line(seen.pam)
    if line is not None and line.arg("conf") is not None:
        findings.append(_finding(
            f"pam_pwquality conf= ({line.line.where})",
            f"the default configuration ({PWQ_CONF} and {PWQ_DIR})",
            f"conf={line.arg('conf')}: {DROPIN} is not read"))
    eff = effective(seen)
    expected = {"minlen": f"at least {want.min_length}",
                "minclass": f"at least {want.min_classes}",
                **dict.fromkeys(CREDITS, "0 or less (no length credit)"),
                "enforcing": "1 (weak passwords refused)"}
    for key, words in expected.items():
        if _weak(want, key, eff[key].value):
            findings.append(_finding(f"pam_pwquality {key}", words, _source(eff[key]),
                                     "critical" if key == "enforcing" else "high"))
    if dictionary_missing(seen):
        findings.append(_finding(
            "pam_pwquality dictionary", f"{seen.dictpath}.pwd (package cracklib-runtime) or "
            "dictcheck = 0", "missing: every password change by a user is refused", "critical"))
    findings.extend(pam_findings(seen))
    return findings


def dictionary_missing(seen: Observed) -> bool:
    return effective(seen)["dictcheck"].value != 0 and not seen.dict_present


def pam_findings(seen: Observed) -> list[Finding]:
    expected = "an active 'password requisite pam_pwquality.so' line before pam_unix.so"
    if seen.pam is None:
        return [_finding(COMMON_PASSWORD, expected, "missing", "critical")]
    lines = pam_lines(seen.pam)
    line = pwquality_line(seen.pam)
    if line is None:
        return [_finding(COMMON_PASSWORD, expected, "no pam_pwquality.so line: password "
                         "quality is not checked", "critical")]
    findings = []
    if line.control not in ("requisite", "required"):
        findings.append(_finding(COMMON_PASSWORD, expected,
                                 f"'{line.control}' at line {line.line.number}: a weak "
                                 "password is not refused", "critical"))
    unix = next((p for p in lines if p.module == "pam_unix.so"), None)
    if unix is not None and unix.line.number < line.line.number:
        findings.append(_finding(COMMON_PASSWORD, expected,
                                 f"pam_pwquality.so at line {line.line.number} after "
                                 f"pam_unix.so at line {unix.line.number}", "critical"))
    return findings


def login_defs_effective(seen: Observed) -> dict[str, Line]:
    """The last line setting each key (shadow's getdef keeps the last one)."""
    last: dict[str, Line] = {}
    for line in seen.login_defs or ():
        parts = line.text.split(None, 1)
        if parts and parts[0] in LOGIN_KEYS:
            last[parts[0]] = line
    return last


def login_value(line: Line) -> str:
    parts = line.text.split(None, 1)
    return parts[1].strip().strip('"') if len(parts) > 1 else ""


def login_defs_findings(want: Desired, seen: Observed) -> list[Finding]:
    if seen.login_defs is None:
        return [_finding(LOGIN_DEFS, "the file, with " + ", ".join(LOGIN_KEYS), "missing",
                         "medium")]
    last = login_defs_effective(seen)
    findings = []
    for key, value in want.login_defs.items():
        line = last.get(key)
        if line is None:
            findings.append(_finding(f"{LOGIN_DEFS} {key}", value, "unset", "medium"))
        elif login_value(line) != value:
            findings.append(_finding(f"{LOGIN_DEFS} {key}", value,
                                     f"{login_value(line)} (line {line.number})", "medium"))
    return findings


def _date(days: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()


def scope(want: Desired, account: Account, today: int | None) -> str | None:
    """None when ageing applies to ``account``; otherwise why not (for ``skipped``).

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


def drifting(want: Desired, account: Account) -> bool:
    a = want.ageing
    return (account.min_days, account.max_days, account.warn_days) != (
        a.min_days, a.max_days, a.warn_days) or account.last_change is None


def account_findings(want: Desired, seen: Observed) -> list[Finding]:
    if seen.shadow_error is not None:
        return [_finding("/etc/shadow", "readable (the check runs as root)",
                         seen.shadow_error)]
    findings = []
    for account in aged(want, seen):
        subject = f"account {account.name} (uid {account.uid})"
        if account.status == "empty":
            findings.append(_finding(subject, "a password, or a locked account",
                                     "an empty password: it logs in without one (set one or "
                                     "lock it: baomi does not choose for you)", "critical"))
        if drifting(want, account) and account.last_change is not None:
            findings.append(_finding(subject, f"password ageing {want.ageing}",
                                     account.ageing))
        elif account.last_change is None:
            findings.append(_finding(subject, f"password ageing {want.ageing} from a "
                                     "last-change date", f"{account.ageing}, no last-change "
                                     "date: ageing is off"))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return (quality_findings(want, seen) + login_defs_findings(want, seen)
            + account_findings(want, seen))


def skipped(want: Desired, seen: Observed) -> list[str]:
    """Accounts at or above ``min_uid`` that ageing does not apply to, with the reason."""
    reasons = (scope(want, a, seen.today) for a in seen.accounts)
    return [r for r in reasons if r]


# --- what the deploy runs -----------------------------------------------------------------

def weak_keys(want: Desired, seen: Observed) -> set[str]:
    """Owned keys whose effective value falls short of the policy."""
    return {k for k, e in effective(seen).items() if _weak(want, k, e.value)}


def neutralise_script(seen: Observed, want: Desired) -> str:
    """Comment out what defeats the drop-in: lines read after it that set a short-falling value
    for a key whose effective value falls short, and the line that stops libpwquality's
    reading.  Nothing else in those files changes."""
    weak = weak_keys(want, seen)
    lines = [s.line for s in overriding(seen, weak)
             if _int(s.value) is not None and _weak(want, s.key, int(s.value))]
    reading = read_pwquality(seen.pwq_files)
    if seen.lib_rc != 0 and reading.error is not None and reading.error.path != DROPIN:
        lines.append(reading.error)
    commands = [f"sed -i '{line.number}s/^/# disabled by baomi (R-PWD): /' "
                f"{shlex.quote(line.path)}" for line in lines]
    return "; ".join(dict.fromkeys(commands))


def pam_weak_args(want: Desired, seen: Observed) -> list[str]:
    """Arguments of the pam_pwquality line that weaken the policy (and ``conf=``)."""
    line = pwquality_line(seen.pam)
    if line is None:
        return []
    found = [k for k in OWNED_ARGS if k != "conf" and (v := line.arg(k)) is not None
             and _int(v) is not None and _weak(want, k, int(v))]
    return found + (["conf"] if line.arg("conf") is not None else [])


def pam_needs_change(want: Desired, seen: Observed) -> bool:
    return bool(pam_findings(seen) or pam_weak_args(want, seen))


def pam_script(want: Desired, seen: Observed) -> str:
    """Make common-password run pam_pwquality (requisite, before pam_unix, no weakening args).

    A missing line is added by ``pam-auth-update`` (Debian's own tool, from the package's
    profile); weakening arguments are removed and the control set to requisite in place.  The
    script ends by verifying the result and fails loudly if it is still wrong.
    """
    q = shlex.quote(COMMON_PASSWORD)
    steps = []
    line = pwquality_line(seen.pam)
    if line is None:
        steps.append("pam-auth-update --enable pwquality")
    else:
        n = line.line.number
        weak = pam_weak_args(want, seen)
        if weak:
            steps.append(f"sed -i -E '{n}s/[[:space:]]({'|'.join(weak)})=[^[:space:]]*//g' {q}")
        if line.control not in ("requisite", "required"):
            steps.append(f"sed -i -E '{n}s/^([[:space:]]*-?password[[:space:]]+)"
                         f"(\\[[^]]*\\]|[^[:space:]]+)/\\1requisite/' {q}")
    verify = (f"awk '$1 == \"password\" && $0 ~ /pam_pwquality\\.so/ && "
              "($2 == \"requisite\" || $2 == \"required\") { ok = 1 } "
              "$1 == \"password\" && $0 ~ /pam_unix\\.so/ && !ok { exit 1 } "
              f"END {{ exit !ok }}' {q}")
    steps.append(f"if ! {verify}; then echo '{COMMON_PASSWORD}: pam_pwquality.so is still not "
                 "requisite before pam_unix.so; fix it by hand or with pam-auth-update' >&2; "
                 "exit 1; fi")
    return "set -e; " + "; ".join(steps)


def dictionary_script(seen: Observed) -> str:
    """Build the cracklib dictionary (cracklib-runtime's own tool), then verify it is there."""
    target = shlex.quote(seen.dictpath + ".pwd")
    return (f"update-cracklib; test -e {target} || {{ echo 'update-cracklib did not make "
            f"'{target}; exit 1; }}")


def login_defs_script(want: Desired, seen: Observed) -> str:
    """Set each key in place on every line that sets it; append the keys that are missing."""
    q = shlex.quote(LOGIN_DEFS)
    last = login_defs_effective(seen)
    steps = []
    for key, value in want.login_defs.items():
        line = last.get(key)
        if line is not None and login_value(line) == value:
            continue
        steps.append(f"sed -i -E 's/^[[:space:]]*{key}([[:space:]].*)?$/{key}\\t{value}/' {q}")
        if line is None:
            steps.append(f"printf '%s\\t%s\\n' {key} {value} >> {q}")
    return "; ".join(steps)


def ageing_commands(want: Desired, seen: Observed) -> list[str]:
    """One ``chage`` per human account whose ageing differs (a missing last-change: today)."""
    a = want.ageing
    commands = []
    for account in aged(want, seen):
        if not drifting(want, account):
            continue
        today = ' -d "$(date +%F)"' if account.last_change is None else ""
        commands.append(f"chage -m {a.min_days} -M {a.max_days} -W {a.warn_days}{today} "
                        f"{shlex.quote(account.name)}")
    return commands
