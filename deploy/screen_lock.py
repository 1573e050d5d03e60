"""R-LOCK 开机与屏保密码 on a host: dconf lock (workstations), TMOUT, sshd idle probes."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controls import screen_lock as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes.screen_lock import DCONF_UPDATE, install_grub_password, install_sshd_dropin

C = core.CONTROL.name


def _seen(want: core.Desired) -> core.Observed:
    """The host as it is when the operation runs (after the operations before it)."""
    return core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)


@operation()
def dconf_database(want: core.Desired):  # type: ignore[no-untyped-def]
    """Compile the system dconf database when its values differ from the policy's."""
    seen = _seen(want)
    drift = {k: v for k, v in want.dconf_values.items() if seen.dconf_values.get(k) != v}
    unlocked = [k for k, w in seen.writable.items() if w != "false"]
    if drift or unlocked or len(seen.writable) < len(want.dconf_values):
        yield DCONF_UPDATE
    else:
        host.noop("dconf database holds the policy's values")


@operation()
def sshd_dropin(want: core.Desired):  # type: ignore[no-untyped-def]
    """Install the drop-in only if `sshd -t` accepts it, then reload sshd."""
    if _seen(want).sshd_dropin == want.sshd_dropin:
        host.noop(f"{core.SSHD_DROPIN} is up to date")
        return
    yield install_sshd_dropin(want.sshd_dropin)


@operation()
def grub_password(want: core.Desired, hash_file: str | None):  # type: ignore[no-untyped-def]
    """Where GRUB is present, install the superuser password script and regenerate grub.cfg."""
    seen = _seen(want)
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
        script = install_grub_password(Path(hash_file).read_text().strip())
    except (OSError, ValueError) as exc:
        raise OperationError(f"bootloader password hash {hash_file}: {exc}") from None
    yield script


def apply() -> None:
    want = core.desired(context())
    if want.desktop:
        put_text(C, core.DCONF_PROFILE, want.dconf_profile)
        put_text(C, core.DCONF_KEYS, want.dconf_keys)
        put_text(C, core.DCONF_LOCKS, want.dconf_locks)
        # Reads the compiled database at execute time, after the files above are in place.
        dconf_database(name=op_name(C, "dconf update"), want=want)
    put_text(C, core.TMOUT_FILE, want.tmout_file)
    sshd_dropin(name=op_name(C, core.SSHD_DROPIN), want=want)
    if want.bootloader_password:
        grub_password(name=op_name(C, "bootloader password"), want=want,
                      hash_file=host.data.get("baomi_grub_hash_file"))
