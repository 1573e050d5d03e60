"""R-TLS 加密传输 for administrative access: sshd keys only, root at most by key, approved crypto.

The control contract (:mod:`baomi.controls.contract`): ``desired`` (the drop-in and the sshd
settings), ``observe_script`` (read-only commands), ``parse`` (→ :class:`Observed`), ``compare``
(→ findings of the checks below).  ``deploy/ssh.py``, ``checks/test_ssh.py`` and the agent run
them; the fix (neutralising earlier lines) is in :mod:`baomi.fixes.ssh`.

sshd takes the *first* value of a keyword across the main file and its includes.  Debian's
``sshd_config`` includes ``sshd_config.d/*.conf`` at its top, so our drop-in wins over the main
file, but a drop-in that sorts earlier (``10-foo.conf``) wins over ours.  The check therefore
reads the effective configuration (``sshd -T``) and names the files that set a keyword, and the
deploy neutralises the earlier settings that would override the policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check, file_findings
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.sshd import (
    MATCH_CONTEXTS,
    SSHD_T,
    MatchContext,
    SshdSettings,
    parse_contexts,
    parse_effective,
)

TLS = ("R-TLS",)  # most checks serve R-TLS alone; LogLevel and the banner serve R-LOG too
CONFIG_VALID = check("ssh.config_valid", "sshd accepts its whole configuration (sshd -T)", TLS)
PASSWORD_AUTHENTICATION = check("ssh.password_authentication",
                                "no password or keyboard-interactive login", TLS)
PERMIT_ROOT_LOGIN = check("ssh.permit_root_login", "root logs in at most by key", TLS)
CIPHERS = check("ssh.ciphers", "only approved ciphers", TLS)
MACS = check("ssh.macs", "only approved MACs", TLS)
KEX = check("ssh.kex", "only approved key exchange algorithms", TLS)
DROPIN_FILE = check("ssh.dropin", "baomi's drop-in is in place, unedited", TLS)
HOST_KEYS = check("ssh.host_key_algorithms",
                  "host keys offered: Ed25519 and RSA-SHA2 only (no ECDSA, no ssh-rsa)", TLS)
AUTH_LIMITS = check("ssh.auth_limits", "MaxAuthTries and LoginGraceTime are the policy's", TLS)
FORWARDING = check("ssh.forwarding", "no TCP, agent or X11 forwarding (but for the policy's "
                   "forwarding_groups)", TLS)
LOG_LEVEL = check("ssh.log_level", "LogLevel VERBOSE: each login logs its key's fingerprint",
                  ("R-LOG",))
USER_ENVIRONMENT = check("ssh.user_environment", "PermitUserEnvironment no", TLS)
BANNER = check("ssh.banner", "the policy's confidentiality banner: sshd Banner, /etc/issue, "
               "/etc/issue.net")
CHECKS = (CONFIG_VALID, PASSWORD_AUTHENTICATION, PERMIT_ROOT_LOGIN, CIPHERS, MACS, KEX,
          DROPIN_FILE, HOST_KEYS, AUTH_LIMITS, FORWARDING, LOG_LEVEL, USER_ENVIRONMENT, BANNER)
BY_KEYWORD = {"PasswordAuthentication": PASSWORD_AUTHENTICATION,
              "KbdInteractiveAuthentication": PASSWORD_AUTHENTICATION,
              "PermitRootLogin": PERMIT_ROOT_LOGIN, "Ciphers": CIPHERS, "MACs": MACS,
              "KexAlgorithms": KEX, "HostKeyAlgorithms": HOST_KEYS,
              "MaxAuthTries": AUTH_LIMITS, "LoginGraceTime": AUTH_LIMITS,
              "AllowTcpForwarding": FORWARDING, "AllowAgentForwarding": FORWARDING,
              "X11Forwarding": FORWARDING, "LogLevel": LOG_LEVEL,
              "PermitUserEnvironment": USER_ENVIRONMENT, "Banner": BANNER}
FORWARDING_KEYS = ("AllowTcpForwarding", "AllowAgentForwarding")
HEADER = "# Managed by baomi: R-TLS 加密传输, R-LOG. Local edits are reverted.\n"
ISSUE_FILES = ("/etc/issue", "/etc/issue.net")
BANNER_FILE = "/etc/issue.net"

SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_DIR = "/etc/ssh/sshd_config.d"
DROPIN = f"{SSHD_DIR}/40-baomi-ssh.conf"
# The effective config root meets when it logs in (Match blocks are evaluated for it).
# A keyword-interactive login through PAM is a password prompt too.
KEYWORDS = tuple(BY_KEYWORD)


@dataclass(frozen=True)
class Desired:
    """The sshd settings R-TLS requires and the exact drop-in that sets them."""

    sshd: SshdSettings
    dropin: str
    banner: str = ""


def desired(ctx: HostContext) -> Desired:
    s = ctx.policy.ssh
    sshd = SshdSettings({
        "PasswordAuthentication": "yes" if s.password_authentication else "no",
        "KbdInteractiveAuthentication": "yes" if s.password_authentication else "no",
        "PermitRootLogin": s.permit_root_login,
        "Ciphers": ",".join(s.ciphers),
        "MACs": ",".join(s.macs),
        "KexAlgorithms": ",".join(s.kex),
        "HostKeyAlgorithms": ",".join(s.host_key_algorithms),
        "MaxAuthTries": str(s.max_auth_tries),
        "LoginGraceTime": str(s.login_grace_seconds),
        "AllowTcpForwarding": "no",
        "AllowAgentForwarding": "no",
        "X11Forwarding": "no",
        "LogLevel": "VERBOSE",
        "PermitUserEnvironment": "no",
        "Banner": BANNER_FILE,
    })
    # A Match block in an included file ends with that file (OpenSSH >= 8.2): it cannot
    # capture the main file's later lines.
    allowed = "" if not s.forwarding_groups else (
        f"# forwarding_groups: TCP and agent forwarding for these groups only\n"
        f"Match Group {','.join(s.forwarding_groups)}\n"
        + "".join(f"    {k} yes\n" for k in FORWARDING_KEYS))
    return Desired(sshd=sshd, dropin=HEADER + sshd.render() + allowed, banner=s.banner)


def observe_script(want: Desired | None = None) -> str:
    """Read-only: the drop-in, the effective config, and every file line setting our keywords."""
    pattern = "|".join(KEYWORDS)
    commands = {
        "dropin": cat(DROPIN),
        "sshd_T": f"{SSHD_T} 2>&1",
        # file:line:text of every line that sets one of our keywords, in sshd's reading order.
        "settings": f"grep -HniE '^[[:space:]]*({pattern})([[:space:]]|=)' {SSHD_CONFIG} "
                    f"$(ls {SSHD_DIR}/*.conf 2>/dev/null | LC_ALL=C sort); true",
        "include": f"grep -niE '^[[:space:]]*include[[:space:]]' {SSHD_CONFIG} | head -n1",
        # The effective config of each connection a Match block selects (not only root's).
        "match": MATCH_CONTEXTS,
        **{f"issue{i}": cat(path) for i, path in enumerate(ISSUE_FILES)},
    }
    return script(commands)


@dataclass(frozen=True)
class Setting:
    """One line of a config file that sets one of our keywords."""

    path: str
    line: int
    keyword: str
    value: str


@dataclass(frozen=True)
class Observed:
    dropin: str | None
    effective: dict[str, str]
    sshd_error: str | None
    settings: tuple[Setting, ...]
    include_line: int | None
    contexts: tuple[MatchContext, ...] = ()
    issue: tuple[str | None, ...] = ()  # ISSUE_FILES' contents (None: missing)


_SETTING = re.compile(r"^(?P<path>/[^:]+):(?P<line>\d+):\s*(?P<key>\w+)"
                      r"(?:\s*=\s*|\s+)(?P<value>.*)$")


def parse(output: str, want: Desired | None = None) -> Observed:
    sec = sections(output)
    dropin = sec.get("dropin")
    sshd_t = sec.get("sshd_T")
    effective: dict[str, str] = {}
    sshd_error = None
    if sshd_t is not None and sshd_t.ok:
        effective = parse_effective(sshd_t.out)
    else:
        out = sshd_t.out.strip() if sshd_t is not None else ""
        sshd_error = out[-300:] or ("sshd -T did not run" if sshd_t is None
                                     else f"sshd -T exited {sshd_t.rc}")
    settings = []
    for raw in (sec["settings"].out if "settings" in sec else "").splitlines():
        m = _SETTING.match(raw.strip())
        if m:
            settings.append(Setting(m["path"], int(m["line"]), m["key"], m["value"].strip()))
    include_line = None
    inc = sec.get("include")
    if inc is not None and inc.out.strip():
        number = inc.out.strip().partition(":")[0]
        include_line = int(number) if number.isdigit() else None
    return Observed(
        dropin=dropin.out if dropin is not None and dropin.ok else None,
        effective=effective,
        sshd_error=sshd_error,
        settings=tuple(settings),
        include_line=include_line,
        contexts=tuple(parse_contexts(sec.text("match") or "")),
        issue=tuple(sec.text(f"issue{i}") for i in range(len(ISSUE_FILES))),
    )


def overriding(seen: Observed, keyword: str) -> list[Setting]:
    """Lines that sshd reads before our drop-in and that set ``keyword`` (they win over it).

    With the Include at line N of the main file, sshd reads lines 1..N-1, then the drop-ins in
    name order, then the rest of the main file.
    """
    ours = DROPIN.rsplit("/", 1)[1]
    found = []
    for s in seen.settings:
        if s.keyword.lower() != keyword.lower() or s.path == DROPIN:
            continue
        if s.path == SSHD_CONFIG:
            if seen.include_line is None or s.line < seen.include_line:
                found.append(s)
        elif s.path.startswith(SSHD_DIR + "/") and s.path.rsplit("/", 1)[1] < ours:
            found.append(s)
    return found


def compare(want: Desired, seen: Observed) -> list[Finding]:
    if seen.sshd_error:
        return [CONFIG_VALID.finding("sshd -T", "a valid sshd configuration", seen.sshd_error,
                                     "critical")]
    findings = []
    for key, want_v, got in want.sshd.differences(seen.effective):
        where = ", ".join(f"{s.path}:{s.line} '{s.keyword} {s.value}'"
                          for s in overriding(seen, key))
        found = (got or "unset") + (f" (set earlier in {where})" if where else "")
        severity = "critical" if key in ("PasswordAuthentication", "PermitRootLogin") else "high"
        findings.append(BY_KEYWORD[key].finding(f"sshd {key}", want_v, found, severity))
    findings += match_findings(want, seen)
    for path, text in zip(ISSUE_FILES, seen.issue, strict=False):
        findings += file_findings(BANNER, path, want.banner, text, "medium")
    if seen.dropin != want.dropin:
        findings.append(DROPIN_FILE.finding(
            DROPIN, "the baomi content", "missing" if seen.dropin is None else "edited content",
            "medium"))
    return findings


def match_findings(want: Desired, seen: Observed) -> list[Finding]:
    """A Match block that loosens a setting for the connections it selects (``Match Address
    10.0.0.0/8`` + ``PasswordAuthentication yes``) fails like a global setting; a Match block
    that could not be evaluated is named, since it may loosen anything."""
    findings = []
    for ctx in seen.contexts:
        if ctx.where.startswith(DROPIN + ":"):
            continue  # our own forwarding_groups block: the drop-in is checked whole
        if ctx.values is None:
            findings.append(PASSWORD_AUTHENTICATION.finding(
                f"sshd Match at {ctx.where}", "every Match block evaluated",
                f"not evaluated: {ctx.spec}", "medium"))
            continue
        for key, want_v, got in want.sshd.differences(ctx.values):
            if key == "PermitRootLogin" and ctx.user != "root":
                continue  # applies to root's logins only
            severity = "critical" if key in ("PasswordAuthentication", "PermitRootLogin") \
                else "high"
            findings.append(BY_KEYWORD[key].finding(
                f"sshd {key} in the Match block at {ctx.where}", want_v,
                f"{got or 'unset'} for {ctx.spec}", severity))
    return findings


CONTROL: Control[Desired, Observed] = Control(
    "ssh", CHECKS, desired, observe_script, parse, compare)
