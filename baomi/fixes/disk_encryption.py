"""R-ENC fixes: what the deploy may do with a volume's device, and the scripts that do it.

Formatting destroys whatever the device holds, so "blank" is proven, not assumed, by
:func:`gate_script`, the one implementation of the rules, run twice: in the observation the
deploy decides on (:func:`decide`: the reason shown in a plan) and again inside the script
that formats, in the same shell, right before ``luksFormat`` (so nothing that changed in
between — a re-pointed link, data written, a mapping opened — can be formatted).  A device is
formatted only when

* it is a block device (``[ -b ]``) under /dev, resolving to the same device as when it was
  checked; nothing holds it (``holders``: a mapping, RAID, LVM), nothing of it is mounted or
  used as swap, and no process has it open;
* it holds no LUKS header: never, whatever the permission, since a closed LUKS volume may be
  one that failed to unlock or whose key another controller escrowed;
* and it is blank: ``blkid -p`` (the device itself, not the cache) and ``wipefs`` find no
  signature, and the first, middle and last MiB are each one repeated byte (zeros, or 0xff of
  erased flash).  Anything else is data: random-looking bytes are unknown data, maybe encrypted
  (a detached-header LUKS, plain dm-crypt, VeraCrypt), patterned bytes a raw database;
* or, instead of blank, one wipe of this disk was allowed on the controller (``baomi disk
  allow-wipe HOST DEVICE --serial S --ticket T``) and the device's serial or WWN is S.

The scripts format (key file + LUKS2 header + escrowed recovery slot), open, make the
filesystem, write the crypttab/fstab lines and mount.  Two writes here do not go through
:func:`baomi.fixes.install.install_file`, on purpose: the key file's content is random bytes
made *on the host* (the unlock key never travels), and the crypttab/fstab lines are edits of
host-owned tables whose other lines stay byte for byte as the host has them (filtered on the
host, then renamed into place with the file's own mode).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from baomi.controls.disk_encryption import (
    KEY_DIR,
    KEY_FILE_BYTES,
    RECOVERY_SLOT,
    Desired,
    VolumeSeen,
    VolumeWant,
)
from baomi.observe import Section

GATE_REFUSED = 3  # the gate's exit status when it refuses (other statuses: it could not run)
RANDOM_BITS_PER_BYTE = 7.5  # of a 64 KiB sample: compressed or encrypted data is above


@dataclass(frozen=True)
class Gate:
    """The verdict of :func:`gate_script` on the host: may it be formatted, and why (not)."""

    ok: bool
    text: str

    @classmethod
    def of(cls, section: Section | None) -> Gate:
        if section is None:
            return cls(False, "the device check did not run")
        return cls(section.ok, section.out.strip().splitlines()[-1] if section.out.strip()
                   else f"the device check exited {section.rc} without a word")


@dataclass(frozen=True)
class Decision:
    action: str   # "format" | "keep" | "refuse"
    reason: str
    permission: str | None = None  # the wipe permission this format uses up (None: blank)


def gate_script(host: str, device: str, expected_real: str | None,
                wipe_serial: str | None = None) -> str:
    """Shell (POSIX sh) that exits 0 when DEVICE may be formatted, or exits 3 with one line
    ``refused: DEVICE: what was found; what to do`` on stderr.  ``expected_real``: the device
    DEVICE resolved to when it was checked (None: not checked yet).  ``wipe_serial``: a wipe
    of the disk with that serial/WWN is allowed, so data on it is no reason to refuse (in use
    or a LUKS header still are).  Reads only; safe in an observation."""
    q = shlex.quote
    allow = f"baomi disk allow-wipe {host} {device} --serial SERIAL --ticket TICKET"
    ids = ('{ lsblk -dn -o SERIAL "$real"; lsblk -dn -o WWN "$real"; '
           'cat "$sys/serial" "$sys/device/serial" "$sys/device/wwid"; '
           'udevadm info --query=property --name="$real" | '
           r"sed -n 's/^ID_\(SERIAL\|SERIAL_SHORT\|WWN\)=//p'; } 2>/dev/null | "
           "sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$' | sort -u")
    entropy = ('dd if="$real" bs=65536 count=1 iflag=skip_bytes skip="$o" 2>/dev/null | '
               "od -An -v -tu1 | awk '{for (i = 1; i <= NF; i++) c[$i]++; n += NF} END "
               '{for (b in c) {p = c[b] / n; h -= p * log(p) / log(2)}; printf "%.2f", h}\'')
    lines = [
        f"d={q(device)}; want={q(expected_real or '')}; serial={q(wipe_serial or '')}",
        f'refuse() {{ echo "refused: $d: $1" >&2; exit {GATE_REFUSED}; }}',
        # udev probes a device after each write; let it finish, so its reader is not taken
        # for a user of the device.
        "udevadm settle --timeout=10 2>/dev/null || true",
        '[ -e "$d" ] || refuse "does not exist"',
        'real=$(readlink -f -- "$d")',
        'case $real in /dev/?*) ;; *) refuse "resolves to $real, outside /dev";; esac',
        '[ -b "$real" ] || refuse "$real is not a block device"',
        '[ -z "$want" ] || [ "$real" = "$want" ] || refuse "now resolves to $real, not $want '
        'as when it was checked: touching neither; apply again"',
        "sys=/sys/class/block/${real##*/}",
        '[ -d "$sys" ] || refuse "$real has no $sys"',
        f"ids=$({ids})",
        'if [ -n "$ids" ]; then',
        '  first=$(printf "%s\\n" "$ids" | head -n 1)',
        f'  allow="if its data may be destroyed, allow one wipe of this disk: "{q(allow)}',
        '  allow=$(printf "%s" "$allow" | sed "s|SERIAL|$first|")',
        "else",
        '  allow="it has no serial, so no wipe of it can be allowed: move its data off and '
        'clear it by hand, or give baomi a blank device"',
        "fi",
        "held=$(ls -A \"$sys/holders\" \"$sys\"/*/holders 2>/dev/null | "
        "grep -v -e '^$' -e ':$' | tr '\\n' ' ')",
        '[ -z "$held" ] || refuse "is held by $held(an open mapping, RAID or LVM): in use"',
        "mounted=$(lsblk -nrp -o NAME,MOUNTPOINTS \"$real\" | awk 'NF > 1' | tr '\\n' ' ')",
        '[ -z "$mounted" ] || refuse "is mounted or used as swap ($mounted): in use"',
        "while read -r sw _; do",
        '  case $(readlink -f -- "$sw") in "$real"|"$real"[0-9]*|"$real"p[0-9]*)',
        '    refuse "is in use as swap ($sw)";;',
        "  esac",
        "done < /proc/swaps",
        'open=$(find -P /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 \\( -lname "$real" '
        '-o -lname "$real[0-9]*" -o -lname "${real}p[0-9]*" \\) 2>/dev/null | '
        "cut -d/ -f3 | sort -u | while read -r p; do "
        "printf '%s(%s) ' \"$p\" \"$(cat \"/proc/$p/comm\" 2>/dev/null)\"; done)",
        '[ -z "$open" ] || refuse "is open by process $open: in use"',
        'rc=0; sig=$(blkid -p -o export "$real" 2>&1) || rc=$?',
        'case $rc in 0|2) ;; *) refuse "blkid -p cannot probe it (exit $rc): $sig";; esac',
        "if printf '%s\\n' \"$sig\" | grep -qx 'TYPE=crypto_LUKS' || "
        'cryptsetup isLuks "$real" 2>/dev/null; then',
        "  refuse \"holds a LUKS header ($(printf '%s\\n' \"$sig\" | grep '^UUID=' | "
        "tr '\\n' ' ')): baomi never wipes a LUKS device, whatever the permission; if it "
        'failed to unlock, open it with its key file or its escrowed passphrase"',
        "fi",
        'if [ -n "$serial" ]; then',
        '  [ -n "$ids" ] || refuse "has no serial or WWN (a loop device?): a wipe permission '
        "names a disk by its serial, so this one is never wiped; move its data off and clear "
        'it by hand, or give baomi a blank device"',
        "  printf '%s\\n' \"$ids\" | grep -qxF -- \"$serial\" || refuse \"has serial "
        "$(printf '%s\\n' \"$ids\" | tr '\\n' ' ')but the wipe permission names serial "
        '$serial: not the disk it was given for; nothing wiped"',
        '  echo "$d ($real, serial $serial): not in use, no LUKS header; one wipe allowed"',
        "  exit 0",
        "fi",
        "[ \"$rc\" = 2 ] || refuse \"holds $(printf '%s\\n' \"$sig\" | "
        "grep -E '^(TYPE|PTTYPE|UUID)=' | tr '\\n' ' ')(blkid -p): not blank; $allow\"",
        'w=$(wipefs --no-act --noheadings --parsable "$real" 2>&1) || '
        'refuse "wipefs cannot read it: $w"',
        '[ -z "$w" ] || refuse "wipefs finds signatures ($w): not blank; $allow"',
        'size=$(blockdev --getsize64 "$real") || refuse "its size cannot be read"',
        "mib=1048576",
        '[ "$size" -ge $((2 * mib)) ] || refuse "is smaller than 2 MiB ($size bytes)"',
        'for o in 0 $((size / 2 / mib * mib)) $(((size - mib) / 4096 * 4096)); do',
        '  cmp -s -n $((mib - 1)) -i "$o:$((o + 1))" "$real" "$real" && continue',
        f"  bits=$({entropy})",
        f"  if awk -v b=\"$bits\" 'BEGIN {{exit !(b >= {RANDOM_BITS_PER_BYTE})}}'; then",
        '    refuse "the MiB at byte $o looks random ($bits bits/byte): unknown data, maybe '
        "encrypted (a detached-header LUKS, plain dm-crypt, VeraCrypt) or compressed; "
        'not blank; $allow"',
        "  fi",
        '  refuse "holds data: the MiB at byte $o is not one repeated byte ($bits bits/byte: '
        'a raw database or a format blkid does not know); not blank; $allow"',
        "done",
        'echo "$d ($real): blank (no signature by blkid -p or wipefs; first, middle and last '
        'MiB each one repeated byte), not in use"',
    ]
    return "\n".join(lines)


def decide(v: VolumeWant, seen: VolumeSeen, escrowed_uuids: set[str], blank: Gate,
           permission: str | None = None, wipe: Gate | None = None) -> Decision:
    """What the deploy may do with a volume's device, from the host's facts and the verdicts
    of :func:`gate_script` (``blank``: as it is; ``wipe``: under the open wipe permission
    ``permission``, if there is one).  A LUKS header is kept when this controller escrowed
    it, never formatted otherwise."""
    if not seen.exists:
        return Decision("refuse", f"{v.device} does not exist on this host")
    if seen.probe_failed:
        return Decision("refuse", f"{v.device} cannot be probed: {seen.probe_failed}")
    uuid = seen.probe.get("UUID")
    if seen.probe.get("TYPE") == "crypto_LUKS" or seen.luks is not None:
        if uuid in escrowed_uuids:
            return Decision("keep", f"{v.device} holds the LUKS header baomi created "
                            f"(UUID {uuid})")
        return Decision("refuse", f"{v.device} holds a LUKS header (UUID {uuid}) whose recovery "
                        "key this controller has not escrowed: never formatted, whatever the "
                        "permission (a wipe permission included). If it is this host's volume "
                        "that failed to unlock, open it with its key file or its escrowed "
                        "passphrase (on the controller that escrowed it: baomi escrow show)")
    if blank.ok:
        return Decision("format", blank.text)
    if permission is None or wipe is None:
        return Decision("refuse", blank.text)
    if not wipe.ok:
        return Decision("refuse", f"{wipe.text} (wipe permission {permission})")
    return Decision("format", wipe.text, permission)


def format_script(want: Desired, v: VolumeWant, host: str, luks_uuid: str, recovery_file: str,
                  expected_real: str, wipe_serial: str | None) -> str:
    """Key file, LUKS2 header (key file in slot 0), recovery passphrase (slot 1, read from a
    0600 file on tmpfs that is removed however the script ends).  :func:`gate_script` runs
    again right before ``luksFormat`` (``wipefs`` first only under a wipe permission for
    ``wipe_serial``); the new key file replaces the old one only once the header is made, so
    a refusal leaves the host's keys as they were.  No secret in the text."""
    dev, key, rec = shlex.quote(v.device), shlex.quote(v.key_file), shlex.quote(recovery_file)
    new = shlex.quote(f"{v.key_file}.baomi-new")
    fmt = ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--cipher",
           want.cipher, "--key-size", str(want.key_size), *want.pbkdf_args(), "--uuid",
           luks_uuid, "--key-slot", "0", "--key-file", f"{v.key_file}.baomi-new", v.device]
    add = ["cryptsetup", "luksAddKey", "--batch-mode", *want.pbkdf_args(), "--key-slot",
           str(RECOVERY_SLOT), "--key-file", f"{v.key_file}.baomi-new", v.device, recovery_file]
    lines = [
        "set -e",
        f"trap 'rm -f {rec} {new}' EXIT",
        "umask 077",
        f"chmod 0600 {rec}",
        f"mkdir -p -m 0755 {shlex.quote(KEY_DIR.rsplit('/', 1)[0])}",
        f"mkdir -p -m 0700 {shlex.quote(KEY_DIR)}",
        f"head -c {KEY_FILE_BYTES} /dev/urandom > {new}",
        f"chmod 0400 {new} && chown root:root {new}",
        f"( {gate_script(host, v.device, expected_real, wipe_serial)} )",
        *([f"wipefs --all --quiet {dev}"] if wipe_serial else []),
        shlex.join(fmt),
        shlex.join(add),
        f"mv -f {new} {key}",
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
