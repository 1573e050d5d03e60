"""R-LOCK 开机与屏保密码: desktop idle lock, shell TMOUT, SSH idle probes, bootloader password.

The control contract (:mod:`baomi.controls.contract`): ``desired`` (host context → files and
settings), ``observe_script`` (read-only commands), ``parse`` (→ :class:`Observed`), ``compare``
(→ findings of the checks below), ``skipped`` (desktop checks on hosts without a desktop, the
bootloader where there is no GRUB or the policy does not ask).  ``deploy/screen_lock.py``,
``checks/test_screen_lock.py`` and the agent run them; the GRUB password script is in
:mod:`baomi.fixes.screen_lock`.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.sshd import SSHD_T, SshdSettings, parse_effective

DCONF_FILES = check("screen_lock.dconf_files", "baomi's dconf profile, keys and locks, unedited")
DCONF_VALUES = check("screen_lock.dconf_values", "the compiled dconf database holds the policy's "
                     "idle lock values")
USER_OVERRIDE = check("screen_lock.user_override", "a normal user cannot change the idle lock "
                      "(gsettings writable is false)")
TMOUT_FILE_CHECK = check("screen_lock.tmout_file", "baomi's TMOUT profile script, unedited")
SHELL_TMOUT = check("screen_lock.shell_tmout", "a login shell gets the policy's TMOUT, readonly")
SSH_IDLE = check("screen_lock.ssh_idle", "sshd probes idle sessions (ClientAlive*, sshd -T)")
BOOTLOADER = check("screen_lock.bootloader_password",
                   "GRUB asks for a superuser password (开机密码)")
CHECKS = (DCONF_FILES, DCONF_VALUES, USER_OVERRIDE, TMOUT_FILE_CHECK, SHELL_TMOUT, SSH_IDLE,
          BOOTLOADER)
DESKTOP_CHECKS = (DCONF_FILES, DCONF_VALUES, USER_OVERRIDE)
# The unprivileged account that tries to override the lock.
PROBE_USER = "nobody"
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
    bootloader_password: bool
    dconf_profile: str
    dconf_keys: str
    dconf_locks: str
    dconf_values: dict[str, str]
    tmout_file: str
    tmout: int
    sshd: SshdSettings
    sshd_dropin: str


def is_desktop(groups: frozenset[str] | set[str]) -> bool:
    return "workstations" in groups


def desired(ctx: HostContext) -> Desired:
    s = ctx.policy.screen_lock
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
        desktop=is_desktop(ctx.groups),
        bootloader_password=s.bootloader_password,
        dconf_profile="user-db:user\nsystem-db:local\n",
        dconf_keys=keys,
        dconf_locks=HEADER + "".join(f"{path}\n" for path in values),
        dconf_values=values,
        tmout_file=(HEADER + f"TMOUT={s.shell_tmout_seconds}\nreadonly TMOUT\nexport TMOUT\n"),
        tmout=s.shell_tmout_seconds,
        sshd=sshd,
        sshd_dropin=HEADER + sshd.render(),
    )


def observe_script(want: Desired) -> str:
    """Read-only commands; :data:`PROBE_USER` is the unprivileged account that tries to
    override the lock."""
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
                    + f"; do printf '%s ' \"$sk\"; su -s /bin/sh {PROBE_USER} -c "
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


def parse(output: str, want: Desired) -> Observed:
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


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    if want.desktop:
        for path, content, label in ((DCONF_PROFILE, seen.dconf_profile, want.dconf_profile),
                                     (DCONF_KEYS, seen.dconf_keys, want.dconf_keys),
                                     (DCONF_LOCKS, seen.dconf_locks, want.dconf_locks)):
            if content != label:
                findings.append(DCONF_FILES.finding(
                    path, "the baomi content", "missing" if content is None else "edited content"))
        for path, value in want.dconf_values.items():
            got = seen.dconf_values.get(path, "")
            if got != value:
                findings.append(DCONF_VALUES.finding(f"dconf {path}", value,
                                                     repr(got) if got else "unset"))
        for _, _, schema, key in _KEYS:
            got = seen.writable.get(f"{schema} {key}", "")
            if got != "false":
                findings.append(USER_OVERRIDE.finding(
                    f"gsettings writable {schema} {key} (as a normal user)", "false (locked)",
                    got or "no answer"))
    if seen.tmout_file != want.tmout_file:
        findings.append(TMOUT_FILE_CHECK.finding(
            TMOUT_FILE, f"TMOUT={want.tmout} readonly",
            "missing" if seen.tmout_file is None else "edited content"))
    if seen.tmout_shell != str(want.tmout):
        findings.append(SHELL_TMOUT.finding("TMOUT in a login shell", str(want.tmout),
                                            repr(seen.tmout_shell or "")))
    elif not seen.tmout_readonly:
        findings.append(SHELL_TMOUT.finding("TMOUT in a login shell", "readonly",
                                            "writable by the user"))
    if seen.sshd_error:
        findings.append(SSH_IDLE.finding("sshd -T", "a valid sshd configuration",
                                         seen.sshd_error, "critical"))
    else:
        findings.extend(SSH_IDLE.finding(f"sshd {key}", want_v, got or "unset")
                        for key, want_v, got in want.sshd.differences(seen.sshd_effective))
    if want.bootloader_password and seen.grub_present and not seen.grub_password:
        findings.append(BOOTLOADER.finding(f"{GRUB_DIR}/grub.cfg",
                                           "a superuser with a PBKDF2 password",
                                           "no superusers/password_pbkdf2 lines"))
    return findings


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Checks of R-LOCK with nothing to look at on this host, with the reason."""
    reasons = {}
    if not want.desktop:
        reasons.update({c.id: "not a workstation (no desktop session to lock)"
                        for c in DESKTOP_CHECKS})
    if not want.bootloader_password:
        reasons[BOOTLOADER.id] = "policy: screen_lock.bootloader_password is false"
    elif not seen.grub_present:
        reasons[BOOTLOADER.id] = f"no GRUB on this host ({GRUB_DIR} absent)"
    return reasons


CONTROL: Control[Desired, Observed] = Control(
    "screen_lock", CHECKS, desired, observe_script, parse, compare, skipped=skipped)
