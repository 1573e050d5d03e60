"""R-LOCK 开机与屏保密码: desktop idle lock, shell TMOUT, SSH idle probes, bootloader password.

Pure functions only: ``desired`` (policy + host groups → files and settings), ``OBSERVE``
(the read-only commands) and ``parse`` (their output → :class:`Observed`), ``compare``
(→ findings).  ``deploy/screen_lock.py``, ``checks/test_screen_lock.py`` and the agent run them.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy
from baomi.sshd import SSHD_T, SshdSettings, parse_effective

CONTROL = "screen_lock"
CLAUSES = ("R-LOCK",)
HEADER = "# Managed by baomi: R-LOCK 开机与屏保密码. Local edits are reverted.\n"

DCONF_PROFILE = "/etc/dconf/profile/user"
DCONF_KEYS = "/etc/dconf/db/local.d/00-baomi-screen-lock"
DCONF_LOCKS = "/etc/dconf/db/local.d/locks/baomi-screen-lock"
TMOUT_FILE = "/etc/profile.d/baomi-tmout.sh"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/50-baomi-screen-lock.conf"
GRUB_DIR = "/boot/grub"

# (dconf path, GVariant value in the key file, gsettings schema, gsettings key)
_KEYS = (
    ("/org/gnome/desktop/session/idle-delay", "uint32 {idle}",
     "org.gnome.desktop.session", "idle-delay"),
    ("/org/gnome/desktop/screensaver/lock-enabled", "true",
     "org.gnome.desktop.screensaver", "lock-enabled"),
    ("/org/gnome/desktop/screensaver/lock-delay", "uint32 {delay}",
     "org.gnome.desktop.screensaver", "lock-delay"),
    ("/org/gnome/desktop/screensaver/idle-activation-enabled", "true",
     "org.gnome.desktop.screensaver", "idle-activation-enabled"),
)


@dataclass(frozen=True)
class Desired:
    """Everything the host must have for R-LOCK, as exact file contents and values."""

    desktop: bool
    dconf_profile: str
    dconf_keys: str
    dconf_locks: str
    dconf_values: dict[str, str]
    tmout_file: str
    tmout: int
    sshd: SshdSettings
    sshd_dropin: str


def is_desktop(groups: set[str]) -> bool:
    return "workstations" in groups


def desired(policy: Policy, groups: set[str]) -> Desired:
    s = policy.screen_lock
    values = {path: value.format(idle=s.idle_seconds, delay=s.lock_delay_seconds)
              for path, value, _, _ in _KEYS}
    sections_: dict[str, list[str]] = {}
    for path, value in values.items():
        directory, _, key = path.rpartition("/")
        sections_.setdefault(directory.lstrip("/"), []).append(f"{key}={value}")
    keys = HEADER + "\n".join(f"[{d}]\n" + "\n".join(lines) + "\n"
                              for d, lines in sections_.items())
    sshd = SshdSettings({"ClientAliveInterval": str(s.ssh_client_alive_interval),
                         "ClientAliveCountMax": str(s.ssh_client_alive_count_max)})
    return Desired(
        desktop=is_desktop(groups),
        dconf_profile="user-db:user\nsystem-db:local\n",
        dconf_keys=keys,
        dconf_locks=HEADER + "".join(f"{path}\n" for path in values),
        dconf_values=values,
        tmout_file=(HEADER + f"TMOUT={s.shell_tmout_seconds}\nreadonly TMOUT\nexport TMOUT\n"),
        tmout=s.shell_tmout_seconds,
        sshd=sshd,
        sshd_dropin=HEADER + sshd.render(),
    )


def observe_script(user: str = "nobody") -> str:
    """Read-only commands; ``user`` is the unprivileged account that tries to override."""
    commands = {
        "profile": cat(DCONF_PROFILE),
        "keys": cat(DCONF_KEYS),
        "locks": cat(DCONF_LOCKS),
        "tmout_file": cat(TMOUT_FILE),
        # What a login shell really gets, and whether it can be changed.
        "tmout_shell": "bash -lc 'echo \"TMOUT=$TMOUT\"; (TMOUT=0) 2>/dev/null "
                       "&& echo writable || echo readonly' 2>/dev/null",
        "sshd_dropin": cat(SSHD_DROPIN),
        "sshd_T": f"{SSHD_T} 2>&1",
        "grub": f"if [ -d {GRUB_DIR} ]; then echo present; grep -E "
                f"'^[[:space:]]*(set superusers|password_pbkdf2)' {GRUB_DIR}/grub.cfg; "
                "else echo absent; fi",
        "dconf": "command -v dconf >/dev/null && for k in "
                 + " ".join(path for path, _, _, _ in _KEYS)
                 + "; do printf '%s ' \"$k\"; dconf read \"$k\"; echo; done",
        "writable": "command -v gsettings >/dev/null && for sk in "
                    + " ".join(f"{schema}:{key}" for _, _, schema, key in _KEYS)
                    + f"; do printf '%s ' \"$sk\"; su -s /bin/sh {user} -c "
                    # dconf warns on stderr that nobody has no cache dir; only stdout answers.
                    "\"gsettings writable ${sk%%:*} ${sk#*:} 2>/dev/null\" 2>/dev/null "
                    "| tail -n1; echo; done",
    }
    return script(commands)


@dataclass(frozen=True)
class Observed:
    dconf_profile: str | None
    dconf_keys: str | None
    dconf_locks: str | None
    dconf_values: dict[str, str]
    writable: dict[str, str]
    tmout_file: str | None
    tmout_shell: str | None
    tmout_readonly: bool
    sshd_dropin: str | None
    sshd_effective: dict[str, str]
    sshd_error: str | None
    grub_present: bool
    grub_password: bool


def parse(output: str) -> Observed:
    sec = sections(output)

    text = sec.text

    dconf_values: dict[str, str] = {}
    for line in (text("dconf") or "").splitlines():
        path, _, value = line.strip().partition(" ")
        if path.startswith("/"):
            dconf_values[path] = value.strip()
    writable: dict[str, str] = {}
    for line in (text("writable") or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if ":" in key:
            schema, _, name = key.partition(":")
            writable[f"{schema} {name}"] = value.strip()
    tmout_shell = None
    readonly = False
    for line in (text("tmout_shell") or "").splitlines():
        if line.startswith("TMOUT="):
            tmout_shell = line.partition("=")[2].strip()
        elif line.strip() == "readonly":
            readonly = True
    sshd_t = sec.get("sshd_T")
    effective: dict[str, str] = {}
    sshd_error = None
    if sshd_t is not None and sshd_t.ok:
        effective = parse_effective(sshd_t.out)
    elif sshd_t is not None:
        sshd_error = sshd_t.out.strip()[-300:] or f"sshd -T exited {sshd_t.rc}"
    grub = sec.get("grub")
    grub_text = grub.out if grub is not None else ""
    return Observed(
        dconf_profile=text("profile"),
        dconf_keys=text("keys"),
        dconf_locks=text("locks"),
        dconf_values=dconf_values,
        writable=writable,
        tmout_file=text("tmout_file"),
        tmout_shell=tmout_shell,
        tmout_readonly=readonly,
        sshd_dropin=text("sshd_dropin"),
        sshd_effective=effective,
        sshd_error=sshd_error,
        grub_present=grub_text.startswith("present"),
        grub_password="password_pbkdf2" in grub_text and "superusers" in grub_text,
    )


def _finding(subject: str, expected: str, found: str, severity: str = "high") -> Finding:
    return Finding(CONTROL, CLAUSES, severity, subject, expected, found)


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    if want.desktop:
        for path, content, label in ((DCONF_PROFILE, seen.dconf_profile, want.dconf_profile),
                                     (DCONF_KEYS, seen.dconf_keys, want.dconf_keys),
                                     (DCONF_LOCKS, seen.dconf_locks, want.dconf_locks)):
            if content != label:
                findings.append(_finding(path, "the baomi content",
                                         "missing" if content is None else "edited content"))
        for path, value in want.dconf_values.items():
            got = seen.dconf_values.get(path, "")
            if got != value:
                findings.append(_finding(f"dconf {path}", value, repr(got) if got else "unset"))
        for _, _, schema, key in _KEYS:
            got = seen.writable.get(f"{schema} {key}", "")
            if got != "false":
                findings.append(_finding(f"gsettings writable {schema} {key} (as a normal user)",
                                         "false (locked)", got or "no answer"))
    if seen.tmout_file != want.tmout_file:
        findings.append(_finding(TMOUT_FILE, f"TMOUT={want.tmout} readonly",
                                 "missing" if seen.tmout_file is None else "edited content"))
    if seen.tmout_shell != str(want.tmout):
        findings.append(_finding("TMOUT in a login shell", str(want.tmout),
                                 repr(seen.tmout_shell or "")))
    elif not seen.tmout_readonly:
        findings.append(_finding("TMOUT in a login shell", "readonly", "writable by the user"))
    if seen.sshd_error:
        findings.append(_finding("sshd -T", "a valid sshd configuration", seen.sshd_error,
                                 "critical"))
    else:
        findings.extend(_finding(f"sshd {key}", want_v, got or "unset")
                        for key, want_v, got in want.sshd.differences(seen.sshd_effective))
    return findings


def compare_bootloader(seen: Observed) -> list[Finding]:
    """The boot password half of R-LOCK (开机密码); only meaningful where GRUB is present."""
    if seen.grub_present and not seen.grub_password:
        return [_finding(f"{GRUB_DIR}/grub.cfg", "a superuser with a PBKDF2 password",
                         "no superusers/password_pbkdf2 lines")]
    return []


GRUB_SCRIPT = "/etc/grub.d/01_baomi_password"
_PBKDF2 = "grub.pbkdf2.sha512."


def grub_password_script(pbkdf2_hash: str, superuser: str = "root") -> str:
    """The /etc/grub.d script that makes GRUB ask for a password (R-LOCK 开机密码).

    ``pbkdf2_hash`` is the output of ``grub-mkpasswd-pbkdf2`` (never the password itself).
    """
    if not pbkdf2_hash.startswith(_PBKDF2) or any(c.isspace() for c in pbkdf2_hash):
        raise ValueError("not a grub-mkpasswd-pbkdf2 hash (grub.pbkdf2.sha512.N.SALT.HASH)")
    return ("#!/bin/sh\n" + HEADER + "cat <<'EOF'\n"
            f'set superusers="{superuser}"\npassword_pbkdf2 {superuser} {pbkdf2_hash}\nEOF\n')


def skipped(seen: Observed) -> list[str]:
    """Parts of R-LOCK that do not apply to this host, with the reason (shown in reports)."""
    reasons = []
    if not seen.grub_present:
        reasons.append(f"bootloader password: no GRUB on this host ({GRUB_DIR} absent)")
    return reasons
