"""sshd fixes shared by the controls that own sshd settings (R-TLS, R-LOCK)."""

from __future__ import annotations

from baomi.fixes.install import install_file

RELOAD = ("if [ -d /run/systemd/system ]; then systemctl reload ssh; "
          "elif [ -s /run/sshd.pid ]; then kill -HUP \"$(cat /run/sshd.pid)\"; fi")


def install_dropin_script(path: str, content: str) -> str:
    """Install an sshd drop-in only if the whole config still validates (``sshd -t``).

    On failure the previous file is put back and the script exits non-zero, so a bad setting
    can never lock IT out at the next reload; then the running sshd is reloaded.
    """
    return install_file(path, content, mode="0644", validate="sshd -t", then=RELOAD)
