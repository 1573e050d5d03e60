"""R-LOCK fixes: the dconf database, the sshd idle-probe drop-in, the GRUB password (开机密码)."""

from __future__ import annotations

from baomi.controls.screen_lock import HEADER, SSHD_DROPIN
from baomi.fixes.install import install_file
from baomi.fixes.sshd import install_dropin_script

GRUB_SCRIPT = "/etc/grub.d/01_baomi_password"
# Compiles /etc/dconf/db/local.d (keys and locks) into the system database users read: under
# the baseline's login umask 027 (login_defaults, SSH sessions too) it came out 0640, so users
# could not read the locks and a repaired screen lock stayed writable (seen in the demo).
DCONF_UPDATE = "umask 022 && dconf update"
_PBKDF2 = "grub.pbkdf2.sha512."


def grub_password_script(pbkdf2_hash: str, superuser: str = "root") -> str:
    """The /etc/grub.d script that makes GRUB ask for a password (R-LOCK 开机密码).

    ``pbkdf2_hash`` is the output of ``grub-mkpasswd-pbkdf2`` (never the password itself).
    """
    if not pbkdf2_hash.startswith(_PBKDF2) or any(c.isspace() for c in pbkdf2_hash):
        raise ValueError("not a grub-mkpasswd-pbkdf2 hash (grub.pbkdf2.sha512.N.SALT.HASH)")
    return ("#!/bin/sh\n" + HEADER + "cat <<'EOF'\n"
            f'set superusers="{superuser}"\npassword_pbkdf2 {superuser} {pbkdf2_hash}\nEOF\n')


def install_grub_password(pbkdf2_hash: str) -> str:
    """Install the password script (root-only: it holds the hash) and regenerate grub.cfg."""
    return install_file(GRUB_SCRIPT, grub_password_script(pbkdf2_hash), mode="0700",
                        then="update-grub")


def install_sshd_dropin(content: str) -> str:
    """The ClientAlive drop-in, installed only if ``sshd -t`` accepts the whole config."""
    return install_dropin_script(SSHD_DROPIN, content)
