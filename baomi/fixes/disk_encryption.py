"""R-ENC fixes: what the deploy may do with a volume's device, and the scripts that do it.

:func:`decide` never lets a device holding data be formatted unless the policy says so
(``wipe_allowed``), and never one in use.  The scripts format (key file + LUKS2 header +
escrowed recovery slot), open, make the filesystem, write the crypttab/fstab lines and mount.

Two writes here do not go through :func:`baomi.fixes.install.install_file`, on purpose: the
key file's content is random bytes made *on the host* (the unlock key never travels), and the
crypttab/fstab lines are edits of host-owned tables whose other lines stay byte for byte as
the host has them (filtered on the host, then renamed into place with the file's own mode).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from baomi.controls.disk_encryption import (
    KEY_DIR,
    KEY_FILE_BYTES,
    RECOVERY_SLOT,
    Desired,
    Observed,
    VolumeSeen,
    VolumeWant,
)


@dataclass(frozen=True)
class Decision:
    action: str   # "format" | "keep" | "refuse"
    reason: str
    wipe: bool = False


def decide(v: VolumeWant, seen: VolumeSeen, observed: Observed,
           escrowed_uuids: set[str]) -> Decision:
    """What the deploy may do with a volume's device.  Never formats a device holding data
    unless the policy says so (wipe_allowed), and never one that is in use."""
    if not seen.exists:
        return Decision("refuse", f"{v.device} does not exist on this host")
    if seen.probe_failed:
        return Decision("refuse", f"{v.device} cannot be probed: {seen.probe_failed}")
    dev = observed.devices.get(seen.real or v.device)
    in_use = []
    if dev is not None:
        in_use = [*dev.mountpoints,
                  *(f"{d.path} ({d.type})" for d in observed.devices.values()
                    if dev.path in d.parents)]
    kind = seen.probe.get("TYPE")
    uuid = seen.probe.get("UUID")
    if kind == "crypto_LUKS" and uuid in escrowed_uuids:
        return Decision("keep", f"{v.device} holds the LUKS header baomi created (UUID {uuid})")
    if not seen.probe and not in_use:
        return Decision("format", f"{v.device} is blank")
    if kind == "crypto_LUKS":
        held = f"a LUKS header (UUID {uuid}) whose recovery key baomi has not escrowed"
    elif kind:
        held = f"a filesystem ({kind}" + (f", UUID {uuid})" if uuid else ")")
    elif "PTTYPE" in seen.probe:
        held = f"a {seen.probe['PTTYPE']} partition table"
    else:
        held = "devices or mounts on it"
    if in_use:
        return Decision("refuse", f"{v.device} holds {held} and is in use "
                        f"({', '.join(in_use)}): refusing to format it")
    if v.wipe_allowed:
        return Decision("format", f"{v.device} holds {held}; the policy allows wiping it",
                        wipe=True)
    return Decision("refuse", f"{v.device} holds {held}: refusing to format it (that would "
                    "destroy its data); set wipe_allowed: true on this volume in the policy "
                    "only if its data may be destroyed")


def format_script(want: Desired, v: VolumeWant, luks_uuid: str, recovery_file: str,
                  wipe: bool) -> str:
    """Key file, LUKS2 header (key file in slot 0), recovery passphrase (slot 1, read from a
    0600 file on tmpfs that is removed however the script ends).  No secret in the text."""
    dev, key, rec = shlex.quote(v.device), shlex.quote(v.key_file), shlex.quote(recovery_file)
    fmt = ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--cipher",
           want.cipher, "--key-size", str(want.key_size), *want.pbkdf_args(), "--uuid",
           luks_uuid, "--key-slot", "0", "--key-file", v.key_file, v.device]
    add = ["cryptsetup", "luksAddKey", "--batch-mode", *want.pbkdf_args(), "--key-slot",
           str(RECOVERY_SLOT), "--key-file", v.key_file, v.device, recovery_file]
    lines = [
        "set -e",
        f"trap 'rm -f {rec}' EXIT",
        "umask 077",
        f"chmod 0600 {rec}",
        f"mkdir -p -m 0755 {shlex.quote(KEY_DIR.rsplit('/', 1)[0])}",
        f"mkdir -p -m 0700 {shlex.quote(KEY_DIR)}",
        *([f"wipefs --all --quiet {dev}"] if wipe else []),
        f"head -c {KEY_FILE_BYTES} /dev/urandom > {key}.baomi-new",
        f"chmod 0400 {key}.baomi-new && chown root:root {key}.baomi-new",
        f"mv -f {key}.baomi-new {key}",
        shlex.join(fmt),
        shlex.join(add),
    ]
    return "\n".join(lines)


def open_command(v: VolumeWant) -> str:
    return shlex.join(["cryptsetup", "open", "--type", "luks", "--key-file", v.key_file,
                       v.device, v.name])


def mkfs_command(v: VolumeWant) -> str:
    """mkfs on the open mapping, re-checked on the host: only a mapping with no signature."""
    m = shlex.quote(v.mapper)
    refuse = shlex.quote(f"{v.mapper} is not blank: not making a filesystem on it")
    return (f"rc=0; blkid -p {m} >/dev/null || rc=$?; "
            f"if [ \"$rc\" -ne 2 ]; then echo {refuse} >&2; exit 1; fi; "
            f"mkfs.{v.filesystem} -q {m}")


def replace_line_script(path: str, line: str, field: int, value: str) -> str:
    """Drop the lines whose FIELD-th column is VALUE, append LINE; atomic rename, mode kept."""
    q = shlex.quote(path)
    return (f"touch {q} && awk -v v={shlex.quote(value)} '$0 ~ /^[ \\t]*#/ || ${field} != v' "
            f"{q} > {q}.baomi-new && printf '%s\\n' {shlex.quote(line)} >> {q}.baomi-new && "
            f"chmod --reference={q} {q}.baomi-new && chown --reference={q} {q}.baomi-new && "
            f"mv -f {q}.baomi-new {q}")


def mount_script(v: VolumeWant) -> str:
    """Mount the volume from its fstab line, refusing to hide files already under the mount."""
    q = shlex.quote(v.mount)
    hidden = shlex.quote(f"{v.mount} is not empty: mounting over it would hide its files; "
                         "move them away (then onto the volume) first")
    return (f"mkdir -p {q} && if [ -n \"$(ls -A {q})\" ]; then echo {hidden} >&2; exit 1; fi "
            f"&& mount {q}")
