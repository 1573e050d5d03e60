"""R-ENC 加密存储: customer data at rest sits on LUKS2 (dm-crypt) volumes, recovery keys escrowed.

Two halves, one truth:

* **Volumes** (``disk_encryption.volumes``): each data volume named for the host's groups is a
  LUKS2 header on its device (cipher, key size and PBKDF from the policy), unlocked at boot by
  a root-only key file (``/etc/baomi/keys/NAME.key``, mode 0400, via ``/etc/crypttab``) and
  mounted through ``/etc/fstab``.  A second key slot holds a recovery passphrase that lives
  in the controller's escrow (controller/escrow.py), never only on the host.
  :func:`baomi.fixes.disk_encryption.decide` says what the deploy may do with a device:
  format it only when it is blank (or one wipe of that very disk was allowed on the controller
  with ``baomi disk allow-wipe``), leave a header baomi escrowed alone, never touch any other
  LUKS header, refuse anything else with the reason, since formatting destroys data.
* **Placement**: every sensitive path of a level with ``encryption: true`` (and ``/`` on the
  groups of ``require_root_on``) must sit on a mount whose device chain (``findmnt -J -T`` →
  ``lsblk -J`` parents) holds an active crypt mapping (``cryptsetup status``) with an
  approved cipher and key size.  The evidence is the chain: path → mount → devices.

The control contract (:mod:`baomi.controls.contract`): ``desired``, ``observe_script``,
``parse``, ``compare`` (→ findings of the checks below; the root filesystem is its own check,
``disk_encryption.root_encrypted``, so a fleet whose workstations cannot have an encrypted
root yet shows exactly that).  ``deploy/disk_encryption.py``, ``checks/test_disk_encryption.py``
and the agent run them; what may be done with a device and the scripts that format, open,
mount and write crypttab/fstab are in :mod:`baomi.fixes.disk_encryption`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from baomi.controls.contract import Check, Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

LUKS_HEADER = check("disk_encryption.luks_header",
                    "each data volume is a LUKS2 header: approved cipher and key size, a key "
                    "file slot and an escrowed recovery slot")
KEY_FILE = check("disk_encryption.key_file", "each volume's unlock key file is root:root 0400")
CRYPTTAB_LINE = check("disk_encryption.crypttab",
                      "/etc/crypttab unlocks each volume with its key file at boot")
FSTAB_LINE = check("disk_encryption.fstab", "/etc/fstab mounts each volume's mapping at boot")
MOUNTED = check("disk_encryption.mounted", "each volume is open and mounted on its mount point")
PATHS = check("disk_encryption.sensitive_paths",
              "sensitive paths of levels with encryption: true sit on an open LUKS mapping")
ROOT = check("disk_encryption.root_encrypted",
             "the root filesystem sits on an open LUKS mapping (groups of require_root_on)")
VOLUME_CHECKS = (LUKS_HEADER, KEY_FILE, CRYPTTAB_LINE, FSTAB_LINE, MOUNTED)
CHECKS = (*VOLUME_CHECKS, PATHS, ROOT)
KEY_DIR = "/etc/baomi/keys"
SECRETS_DIR = "/run/baomi-secrets"  # tmpfs: the recovery passphrase never touches a disk here
CRYPTTAB = "/etc/crypttab"
FSTAB = "/etc/fstab"
ESCROW_KIND = "luks-recovery"
KEY_FILE_BYTES = 64
RECOVERY_SLOT = 1  # slot 0: the key file (unattended unlock); slot 1: the escrowed passphrase
LSBLK_COLUMNS = "NAME,PATH,TYPE,FSTYPE,UUID,MOUNTPOINTS"


@dataclass(frozen=True)
class VolumeWant:
    device: str
    mount: str
    filesystem: str
    name: str

    @property
    def mapper(self) -> str:
        return f"/dev/mapper/{self.name}"

    @property
    def key_file(self) -> str:
        return f"{KEY_DIR}/{self.name}.key"

    def crypttab_line(self, luks_uuid: str) -> str:
        return f"{self.name} UUID={luks_uuid} {self.key_file} luks"

    @property
    def fstab_line(self) -> str:
        # nofail: a missing data disk must not stop the host from booting to sshd.
        return f"{self.mapper} {self.mount} {self.filesystem} defaults,nofail 0 2"


@dataclass(frozen=True)
class PathWant:
    path: str
    level: str
    severity: str


@dataclass(frozen=True)
class Desired:
    enabled: bool
    cipher: str
    key_size: int
    pbkdf: str
    pbkdf_force_iterations: int | None
    approved_ciphers: tuple[str, ...]
    min_key_size: int
    volumes: tuple[VolumeWant, ...]
    paths: tuple[PathWant, ...]
    root: bool

    def pbkdf_args(self) -> list[str]:
        args = ["--pbkdf", self.pbkdf]
        if self.pbkdf_force_iterations is not None:
            args += ["--pbkdf-force-iterations", str(self.pbkdf_force_iterations)]
        return args


def desired(ctx: HostContext) -> Desired:
    policy, groups = ctx.policy, ctx.groups
    d = policy.disk_encryption
    volumes: tuple[VolumeWant, ...] = ()
    paths: tuple[PathWant, ...] = ()
    if d.enabled:
        volumes = tuple(VolumeWant(v.device, v.mount.rstrip("/") or "/", v.filesystem, v.name)
                        for v in d.volumes if "all" in v.groups or groups & set(v.groups))
        paths = tuple(PathWant(p.path.rstrip("/") or "/", p.level, policy.level(p.level).severity)
                      for p in policy.paths_for(set(groups)) if policy.level(p.level).encryption)
    return Desired(
        enabled=d.enabled, cipher=d.cipher, key_size=d.key_size, pbkdf=d.pbkdf,
        pbkdf_force_iterations=d.pbkdf_force_iterations,
        approved_ciphers=d.approved_ciphers, min_key_size=d.min_key_size,
        volumes=volumes, paths=paths,
        root=d.enabled and bool(groups & set(d.require_root_on)))


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "policy: disk_encryption.enabled is false"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Checks with nothing to look at on this host, each with its reason."""
    out: dict[str, str] = {}
    if not want.volumes:
        out.update((c.id, "no data volume of the policy for this host's groups")
                   for c in VOLUME_CHECKS)
    elif not any(_has_header(vs) for vs in seen.volumes):
        # Key file, tables and mount belong to a header; without one only luks_header fails.
        reason = (f"no LUKS header on {', '.join(v.device for v in want.volumes)} yet "
                  f"({LUKS_HEADER.id})")
        out.update((c.id, reason) for c in VOLUME_CHECKS if c is not LUKS_HEADER)
    if not want.paths:
        out[PATHS.id] = "no sensitive path of a level with encryption: true for this host's groups"
    if not want.root:
        out[ROOT.id] = "this host's groups are not in require_root_on"
    return out


# --- observing ------------------------------------------------------------------------------

def _mount_of(path: str) -> str:
    """The mount a path's data lands on; a path not created yet is judged by its nearest
    existing parent (where its files would be written)."""
    return (f"p={shlex.quote(path)}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
            "echo \"$p\"; findmnt -J -T \"$p\" -o TARGET,SOURCE,FSTYPE")


def observe_script(want: Desired) -> str:
    commands = {
        "lsblk": f"lsblk -J -o {LSBLK_COLUMNS}",
        # Status only (type, cipher, key size, backing device): never `dmsetup table`,
        # which can print the volume key.
        "crypt": "for n in $(lsblk -nr -o NAME,TYPE | awk '$2 == \"crypt\" {print $1}'); "
                 "do echo \"### $n\"; cryptsetup status \"$n\"; done",
        "crypttab": cat(CRYPTTAB),
        "fstab": cat(FSTAB),
        "root": _mount_of("/"),
    }
    for i, p in enumerate(want.paths):
        commands[f"path.{i}"] = _mount_of(p.path)
    for i, v in enumerate(want.volumes):
        q = shlex.quote(v.device)
        commands[f"vol.{i}.device"] = f"[ -e {q} ] || exit 1; readlink -f {q}"
        # rc 2: no signature at all (blank); -p probes the device itself, not a cache.
        commands[f"vol.{i}.blkid"] = f"blkid -p -o export {q}"
        commands[f"vol.{i}.dump"] = f"cryptsetup luksDump {q}"
        commands[f"vol.{i}.key"] = f"stat -c '%a %U %G %s' {shlex.quote(v.key_file)}"
        commands[f"vol.{i}.inner"] = (f"[ -e {shlex.quote(v.mapper)} ] || exit 3; "
                                      f"blkid -p -o export {shlex.quote(v.mapper)}")
    return script(commands)


# --- parsing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockDev:
    name: str
    path: str
    type: str
    fstype: str | None
    uuid: str | None
    mountpoints: tuple[str, ...]
    parents: tuple[str, ...]  # paths of the devices it sits on


@dataclass(frozen=True)
class CryptStatus:
    name: str
    active: bool
    type: str | None
    cipher: str | None
    key_bits: int | None
    device: str | None


@dataclass(frozen=True)
class MountSeen:
    path: str       # the path asked about
    existing: str   # the path (or its nearest existing parent) that was looked up
    target: str     # the mount point
    source: str     # the mounted device (or "overlay", "tmpfs", ...)
    fstype: str


@dataclass(frozen=True)
class Keyslot:
    slot: int
    key_bits: int | None
    pbkdf: str | None


@dataclass(frozen=True)
class LuksHeader:
    version: int | None
    uuid: str | None
    cipher: str | None
    keyslots: tuple[Keyslot, ...]

    @property
    def key_bits(self) -> int | None:
        return self.keyslots[0].key_bits if self.keyslots else None


@dataclass(frozen=True)
class VolumeSeen:
    device: str
    exists: bool
    real: str | None
    probe: dict[str, str]        # blkid -p: TYPE, UUID, PTTYPE...; empty: blank device
    probe_failed: str | None     # blkid could not read the device (not the same as blank)
    luks: LuksHeader | None
    key_file: tuple[str, str, str, int] | None  # mode, owner, group, size
    inner: dict[str, str] | None  # blkid of /dev/mapper/NAME; None: mapping not present


@dataclass(frozen=True)
class Observed:
    devices: dict[str, BlockDev]
    crypt: dict[str, CryptStatus]
    crypttab: str | None
    fstab: str | None
    root: MountSeen | None
    paths: dict[str, MountSeen]
    volumes: tuple[VolumeSeen, ...]

    def chain(self, source: str) -> list[BlockDev]:
        """The device a mount sits on and every device beneath it, nearest first."""
        out: list[BlockDev] = []
        todo = [_source_device(source)]
        while todo:
            dev = self.devices.get(todo.pop(0))
            if dev is None or dev in out:
                continue
            out.append(dev)
            todo.extend(dev.parents)
        return out


def _source_device(source: str) -> str:
    """findmnt shows btrfs subvolumes as /dev/vda[/@home]: the device is before the bracket."""
    return source.split("[", 1)[0]


def parse_lsblk(text: str) -> dict[str, BlockDev]:
    """lsblk -J nests children under their parents; a device on several parents (RAID, LVM
    across disks) appears once per parent, and its parents are merged."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    found: dict[str, BlockDev] = {}

    def walk(node: dict[str, Any], parent: str | None) -> None:
        path = str(node.get("path") or f"/dev/{node.get('name', '?')}")
        old = found.get(path)
        parents = old.parents if old else ()
        if parent and parent not in parents:
            parents = (*parents, parent)
        found[path] = BlockDev(
            name=str(node.get("name", "")), path=path, type=str(node.get("type") or ""),
            fstype=node.get("fstype"), uuid=node.get("uuid"),
            mountpoints=tuple(m for m in node.get("mountpoints") or () if m),
            parents=parents)
        for child in node.get("children") or ():
            walk(child, path)

    for top in data.get("blockdevices") or ():
        walk(top, None)
    # dm devices are also known as /dev/dm-N and /dev/mapper/NAME; findmnt uses the latter.
    for dev in list(found.values()):
        if dev.type in ("crypt", "lvm", "dm"):
            found.setdefault(f"/dev/mapper/{dev.name}", dev)
    return found


def parse_crypt(text: str) -> dict[str, CryptStatus]:
    out: dict[str, CryptStatus] = {}
    for block in re.split(r"^### ", text, flags=re.M):
        name, _, rest = block.partition("\n")
        name = name.strip()
        if not name:
            continue
        fields: dict[str, str] = {}
        for line in rest.splitlines():
            key, sep, value = line.strip().partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        bits = re.match(r"(\d+)", fields.get("keysize", ""))
        out[name] = CryptStatus(
            name=name, active=" is active" in rest or "is in use" in rest,
            type=fields.get("type"), cipher=fields.get("cipher"),
            key_bits=int(bits.group(1)) if bits else None, device=fields.get("device"))
    return out


def parse_mount(text: str, asked: str) -> MountSeen | None:
    first, _, rest = text.partition("\n")
    try:
        fs = json.loads(rest)["filesystems"][0]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return MountSeen(asked, first.strip(), str(fs.get("target", "")),
                     str(fs.get("source", "")), str(fs.get("fstype", "")))


def parse_luks_dump(text: str) -> LuksHeader:
    version = re.search(r"^Version:\s*(\d+)", text, re.M)
    uuid = re.search(r"^UUID:\s*(\S+)", text, re.M)
    segments = text.partition("Data segments:")[2].partition("Keyslots:")[0]
    cipher = re.search(r"^\s+cipher:\s*(\S+)", segments, re.M)
    cipher_text = cipher.group(1) if cipher else None
    if cipher is None:  # LUKS1 prints the cipher in the header
        name = re.search(r"^Cipher name:\s*(\S+)", text, re.M)
        mode = re.search(r"^Cipher mode:\s*(\S+)", text, re.M)
        cipher_text = f"{name.group(1)}-{mode.group(1)}" if name and mode else None
    slots_text = text.partition("Keyslots:")[2]
    slots_text = re.split(r"^(?:Tokens|Digests):", slots_text, flags=re.M)[0]
    slots: list[Keyslot] = []
    for match in re.finditer(r"^\s+(\d+): luks2\n(?P<body>(?:\t.*\n?|\s{3,}.*\n?)*)", slots_text,
                             re.M):
        body = match["body"]
        key = re.search(r"^\s+Key:\s*(\d+) bits", body, re.M)
        pbkdf = re.search(r"^\s+PBKDF:\s*(\S+)", body, re.M)
        slots.append(Keyslot(int(match.group(1)), int(key.group(1)) if key else None,
                             pbkdf.group(1) if pbkdf else None))
    return LuksHeader(int(version.group(1)) if version else None,
                      uuid.group(1) if uuid else None, cipher_text, tuple(slots))


def _export(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper():
            out[key] = value
    return out


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    ok = sec.text

    lsblk = sec.get("lsblk")
    devices = parse_lsblk(lsblk.out) if lsblk is not None else {}
    crypt = sec.get("crypt")
    root_sec = ok("root")
    paths: dict[str, MountSeen] = {}
    for i, p in enumerate(want.paths):
        text = ok(f"path.{i}")
        seen = parse_mount(text, p.path) if text is not None else None
        if seen is not None:
            paths[p.path] = seen
    volumes = []
    for i, v in enumerate(want.volumes):
        dev = sec.get(f"vol.{i}.device")
        blkid = sec.get(f"vol.{i}.blkid")
        dump = ok(f"vol.{i}.dump")
        key = ok(f"vol.{i}.key")
        inner = sec.get(f"vol.{i}.inner")
        key_file = None
        if key is not None and len(key.split()) == 4:
            mode, owner, group, size = key.split()
            key_file = (mode, owner, group, int(size))
        probe_failed = None
        if blkid is None or blkid.rc not in (0, 2):
            probe_failed = ((blkid.out.strip() if blkid else "") or
                            f"blkid exited {blkid.rc if blkid else '?'}")[-200:]
        volumes.append(VolumeSeen(
            device=v.device, exists=dev is not None and dev.ok,
            real=dev.out.strip() if dev is not None and dev.ok else None,
            probe=_export(blkid.out) if blkid is not None and blkid.ok else {},
            probe_failed=probe_failed,
            luks=parse_luks_dump(dump) if dump is not None else None,
            key_file=key_file,
            inner=None if inner is None or inner.rc not in (0, 2) else (
                _export(inner.out) if inner.ok else {})))
    return Observed(
        devices=devices, crypt=parse_crypt(crypt.out) if crypt is not None else {},
        crypttab=ok("crypttab"), fstab=ok("fstab"),
        root=parse_mount(root_sec, "/") if root_sec is not None else None,
        paths=paths, volumes=tuple(volumes))


# --- comparing (the check) -----------------------------------------------------------------

def table_line(text: str | None, first_field: str, second_field: str | None = None) -> str | None:
    """The first non-comment line of crypttab/fstab whose first (or second) field matches."""
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if (second_field is None and fields[0] == first_field) or (
                second_field is not None and len(fields) > 1 and fields[1] == second_field):
            return " ".join(fields)
    return None


def describe_chain(seen: Observed, mount: MountSeen) -> str:
    chain = seen.chain(mount.source)
    devices = " → ".join(f"{d.path} ({d.type}{', ' + d.fstype if d.fstype else ''})"
                         for d in chain) or f"{mount.source} (not a block device)"
    via = "" if mount.existing == mount.path else f" (via {mount.existing}, not created yet)"
    return (f"{mount.path}{via} → mount {mount.target} ({mount.fstype}) → {devices}")


def _placement(want: Desired, seen: Observed, mount: MountSeen | None, subject: str,
               severity: str, of: Check) -> list[Finding]:
    expected = (f"on an open LUKS (dm-crypt) mapping with cipher in "
                f"{'/'.join(want.approved_ciphers)} and key ≥ {want.min_key_size} bits")
    if mount is None:
        return [of.finding(subject, expected, "findmnt gave no answer", severity)]
    chain = seen.chain(mount.source)
    crypts = [d for d in chain if d.type == "crypt"]
    evidence = describe_chain(seen, mount)
    if not crypts:
        return [of.finding(subject, expected, f"{evidence}: no crypt mapping", severity)]
    problems = []
    for d in crypts:
        status = seen.crypt.get(d.name)
        if status is None or not status.active:
            problems.append(f"{d.name} not active")
        elif status.cipher not in want.approved_ciphers:
            problems.append(f"{d.name} cipher {status.cipher} not approved")
        elif status.key_bits is None or status.key_bits < want.min_key_size:
            problems.append(f"{d.name} key {status.key_bits} bits")
        else:
            return []  # one good mapping in the chain is enough (e.g. LVM on LUKS)
    return [of.finding(subject, expected, f"{evidence}: {'; '.join(problems)}", severity)]


def _paths(want: Desired, seen: Observed) -> list[Finding]:
    findings: list[Finding] = []
    for p in want.paths:
        findings += _placement(want, seen, seen.paths.get(p.path), f"{p.path} ({p.level})",
                               p.severity, PATHS)
    return findings


def _root(want: Desired, seen: Observed) -> list[Finding]:
    if not want.root:
        return []
    return _placement(want, seen, seen.root, "root filesystem /", "high", ROOT)


def _has_header(vs: VolumeSeen) -> bool:
    return vs.exists and vs.luks is not None and vs.probe.get("TYPE") == "crypto_LUKS"


def _volume(want: Desired, seen: Observed, v: VolumeWant, vs: VolumeSeen) -> list[Finding]:
    subject = f"volume {v.device} ({v.name} on {v.mount})"
    if not vs.exists:
        return [LUKS_HEADER.finding(subject, "the device present", "missing")]
    if vs.luks is None or not _has_header(vs):
        return [LUKS_HEADER.finding(subject, "a LUKS2 header",
                                    f"TYPE {vs.probe.get('TYPE') or 'none (blank)'}")]
    findings: list[Finding] = []
    h = vs.luks
    if h.version != 2:
        findings.append(LUKS_HEADER.finding(subject, "LUKS version 2", f"LUKS{h.version}",
                                            "medium"))
    if h.cipher not in want.approved_ciphers:
        findings.append(LUKS_HEADER.finding(
            subject, f"cipher in {'/'.join(want.approved_ciphers)}", f"{h.cipher}"))
    if h.key_bits is None or h.key_bits < want.min_key_size:
        findings.append(LUKS_HEADER.finding(subject, f"key ≥ {want.min_key_size} bits",
                                            f"{h.key_bits} bits"))
    if len(h.keyslots) < 2:
        findings.append(LUKS_HEADER.finding(subject, "2 key slots (key file, escrowed recovery)",
                                            f"{len(h.keyslots)} key slot(s)", "medium"))
    if vs.key_file is None:
        findings.append(KEY_FILE.finding(f"{v.key_file}", "root:root 0400", "missing"))
    elif vs.key_file[:3] != ("400", "root", "root"):
        mode, owner, group, _ = vs.key_file
        findings.append(KEY_FILE.finding(f"{v.key_file}", "root:root 0400",
                                         f"{owner}:{group} {int(mode, 8):04o}", "critical"))
    line = v.crypttab_line(h.uuid or "?")
    got = table_line(seen.crypttab, v.name)
    if got != line:
        findings.append(CRYPTTAB_LINE.finding(f"{CRYPTTAB} {v.name}", repr(line),
                                              repr(got) if got else "no line", "medium"))
    got = table_line(seen.fstab, "", v.mount)
    if got != v.fstab_line:
        findings.append(FSTAB_LINE.finding(f"{FSTAB} {v.mount}", repr(v.fstab_line),
                                           repr(got) if got else "no line", "medium"))
    status = seen.crypt.get(v.name)
    if status is None or not status.active:
        findings.append(MOUNTED.finding(subject, f"open as {v.mapper}", "not open"))
        return findings
    mounted = [d for d in seen.devices.values() if v.mount in d.mountpoints]
    if not mounted or mounted[0].name != v.name:
        found = (f"{mounted[0].path} mounted there" if mounted else "not mounted")
        findings.append(MOUNTED.finding(subject, f"{v.mapper} mounted on {v.mount}", found))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    """Volumes, sensitive-path placement and (on require_root_on groups) the root filesystem."""
    findings: list[Finding] = []
    for v, vs in zip(want.volumes, seen.volumes, strict=True):
        findings += _volume(want, seen, v, vs)
    return findings + _paths(want, seen) + _root(want, seen)


CONTROL: Control[Desired, Observed] = Control(
    "disk_encryption", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped)
