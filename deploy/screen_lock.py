"""R-LOCK 开机与屏保密码 on a host: dconf lock (workstations), TMOUT, sshd idle probes."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controls import screen_lock as core
from baomi.deploy.common import Observation, groups, install_file_script, op_name, policy, put_text
from baomi.fixes.sshd import install_dropin_script

C = core.CONTROL


@operation()
def dconf_database(values: dict[str, str]):  # type: ignore[no-untyped-def]
    """Compile the system dconf database when its values differ from the policy's."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    drift = {k: v for k, v in values.items() if seen.dconf_values.get(k) != v}
    unlocked = [k for k, w in seen.writable.items() if w != "false"]
    if drift or unlocked or len(seen.writable) < len(values):
        yield "dconf update"
    else:
        host.noop("dconf database holds the policy's values")


@operation()
def sshd_dropin(path: str, content: str):  # type: ignore[no-untyped-def]
    """Install the drop-in only if `sshd -t` accepts it, then reload sshd."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if seen.sshd_dropin == content:
        host.noop(f"{path} is up to date")
        return
    yield install_dropin_script(path, content)


@operation()
def grub_password(hash_file: str | None):  # type: ignore[no-untyped-def]
    """Where GRUB is present, install the superuser password script and regenerate grub.cfg."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if not seen.grub_present:
        host.noop("bootloader password: no GRUB on this host")
        return
    if seen.grub_password:
        host.noop("GRUB already asks for a superuser password")
        return
    if not hash_file:
        raise OperationError("GRUB is present but no bootloader password hash was given: set "
                             "the host data baomi_grub_hash_file to a 0600 file holding the "
                             "output of grub-mkpasswd-pbkdf2")
    try:
        content = core.grub_password_script(Path(hash_file).read_text().strip())
    except (OSError, ValueError) as exc:
        raise OperationError(f"bootloader password hash {hash_file}: {exc}") from None
    yield install_file_script(core.GRUB_SCRIPT, content, "0700")
    yield "update-grub"


def apply() -> None:
    want = core.desired(policy(), groups())
    if want.desktop:
        put_text(C, core.DCONF_PROFILE, want.dconf_profile)
        put_text(C, core.DCONF_KEYS, want.dconf_keys)
        put_text(C, core.DCONF_LOCKS, want.dconf_locks)
        # Reads the compiled database at execute time, after the files above are in place.
        dconf_database(name=op_name(C, "dconf update"), values=want.dconf_values)
    put_text(C, core.TMOUT_FILE, want.tmout_file)
    sshd_dropin(name=op_name(C, core.SSHD_DROPIN), path=core.SSHD_DROPIN,
                content=want.sshd_dropin)
    if policy().screen_lock.bootloader_password:
        grub_password(name=op_name(C, "bootloader password"),
                      hash_file=host.data.get("baomi_grub_hash_file"))

