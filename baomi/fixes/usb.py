"""R-USB, R-DEV fixes: USBGuard's rules (checked by its own parser first) and its unit."""

from __future__ import annotations

from baomi.controls.usb import RULES_FILE, SERVICE
from baomi.fixes.install import install_file

ENABLE = f"systemctl enable {SERVICE}"
RESTART = f"systemctl restart {SERVICE}"


def install_rules(content: str) -> str:
    """Install the rules (0600, root) only if ``usbguard-rule-parser`` accepts every line of the
    new file (it exits 1 naming the line otherwise); the daemon is restarted separately."""
    return install_file(RULES_FILE, content, mode="0600", validate="usbguard-rule-parser -f {new}")
