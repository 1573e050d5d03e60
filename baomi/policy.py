"""The policy model: one YAML file → typed, validated objects.  The only place policy is parsed.

Everything else (deploys, checks, the agent, the collector) receives a :class:`Policy`, never
a dict of YAML.  A bad policy raises :class:`PolicyError` holding *every* problem found, each
as ``FILE:LINE:COL: what is wrong; what is allowed``; the command line turns that into exit
status 2 before anything touches a host.

>>> policy = load_text("screen_lock:\\n  idle_seconds: 300\\n")
>>> policy.screen_lock.idle_seconds
300
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from baomi.clauses import CLAUSES
from baomi.policy_hardening import (
    CoreDumps,
    Kernel,
    LoginDefaults,
    core_dumps,
    kernel,
    login_defaults,
)
from baomi.policy_watch import (
    Antivirus,
    LogForwarding,
    SshGuard,
    antivirus,
    log_forwarding,
    ssh_guard,
)
from baomi.yamlread import (
    POSIX_NAME,
    Context,
    Invalid,
    MapReader,
    Problem,
    absolute_path,
    boolean,
    choice,
    convert_at,
    date,
    describe,
    file_mode,
    integer,
    listof,
    position,
    text,
)

T = TypeVar("T")

SEVERITIES = ("low", "medium", "high", "critical")
GROUP_NAME = r"[A-Za-z_][A-Za-z0-9_.-]{0,62}"
DAY = 86_400


class PolicyError(Exception):
    """The policy file is wrong; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- the typed model ----------------------------------------------------------------------

@dataclass(frozen=True)
class Level:
    """A classification level (R-CLS): how strictly data marked with it is protected."""

    name: str
    english: str
    rank: int
    severity: str
    max_file_mode: int
    max_dir_mode: int
    encryption: bool
    audit: bool
    retention_days: int


@dataclass(frozen=True)
class SensitivePath:
    """A directory holding customer data, with its level and who may own it (R-ACL, R-CLS)."""

    path: str
    level: str
    owner: str
    group: str
    retention_days: int | None
    groups: tuple[str, ...]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Volume:
    """A data volume to hold as LUKS2 (R-ENC); ``name`` is its /dev/mapper name."""

    device: str
    mount: str
    filesystem: str
    groups: tuple[str, ...]
    name: str = ""


@dataclass(frozen=True)
class DiskEncryption:
    enabled: bool = True
    cipher: str = "aes-xts-plain64"
    key_size: int = 512
    pbkdf: str = "argon2id"
    pbkdf_force_iterations: int | None = None
    approved_ciphers: tuple[str, ...] = ("aes-xts-plain64",)
    min_key_size: int = 512
    require_root_on: tuple[str, ...] = ("workstations",)
    volumes: tuple[Volume, ...] = ()


@dataclass(frozen=True)
class UsbDevice:
    vendor: str
    product: str
    serial: str | None
    description: str

    @property
    def id(self) -> str:
        return f"{self.vendor}:{self.product}"


@dataclass(frozen=True)
class Usb:
    block_storage: bool = True
    audit_only: bool = False
    allow_hid: bool = True
    allowed: tuple[UsbDevice, ...] = ()
    refuse_buses: tuple[str, ...] = ("firewire", "thunderbolt", "mmc")


@dataclass(frozen=True)
class ScreenLock:
    idle_seconds: int = 300
    lock_delay_seconds: int = 0
    shell_tmout_seconds: int = 900
    ssh_client_alive_interval: int = 300
    ssh_client_alive_count_max: int = 3
    bootloader_password: bool = True


@dataclass(frozen=True)
class Passwords:
    min_length: int = 12
    min_classes: int = 3
    max_days: int = 90
    min_days: int = 1
    warn_days: int = 7


APPROVED_CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
                    "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr")
APPROVED_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
                 "umac-128-etm@openssh.com", "hmac-sha2-512", "hmac-sha2-256")
APPROVED_KEX = ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
                "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512",
                "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha256",
                "ecdh-sha2-nistp521", "ecdh-sha2-nistp384", "ecdh-sha2-nistp256")

# Ed25519 and RSA with SHA-2 only: never ssh-rsa (SHA-1) nor the NIST-curve ECDSA host key.
APPROVED_HOST_KEY_ALGORITHMS = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
DEFAULT_BANNER = (
    "本系统仅限授权人员使用，所有操作均被记录和审计。系统中的客户信息属于保密资料，"
    "未经授权不得访问、复制或外传。\n"
    "Authorised use only. All activity is logged and audited. Customer information on this "
    "system is confidential and must not be accessed, copied or disclosed without "
    "authorisation.\n")
BUSES = ("firewire", "thunderbolt", "mmc")


@dataclass(frozen=True)
class Ssh:
    password_authentication: bool = False
    permit_root_login: str = "prohibit-password"
    ciphers: tuple[str, ...] = APPROVED_CIPHERS[:4]
    macs: tuple[str, ...] = APPROVED_MACS[:3]
    kex: tuple[str, ...] = APPROVED_KEX[:4]
    host_key_algorithms: tuple[str, ...] = APPROVED_HOST_KEY_ALGORITHMS
    max_auth_tries: int = 3
    login_grace_seconds: int = 30
    forwarding_groups: tuple[str, ...] = ()
    banner: str = DEFAULT_BANNER


@dataclass(frozen=True)
class Backup:
    enabled: bool = True
    interval_days: int = 7
    weekday: str = "Sun"
    time: str = "02:00"
    randomized_delay_minutes: int = 60
    grace_hours: int = 24
    keep: int = 8
    keep_monthly: int = 12
    forget_min_percent: int = 50
    repository: str = "rclone:backup@bak1:/srv/restic/{host}"
    paths: tuple[str, ...] = ()
    mount_points: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    check_every_days: int = 7
    restore_sample_files: int = 5


@dataclass(frozen=True)
class Accounts:
    min_uid: int = 1000
    require_approval: bool = True


@dataclass(frozen=True)
class Offboarding:
    freeze_on_trigger: bool = True
    delete_when: str = "end_of_following_month"
    custodian: str = "root"
    archive_dir: str = "/var/lib/baomi/custody"
    protected_accounts: tuple[str, ...] = ("root",)
    kill_sessions: bool = True


@dataclass(frozen=True)
class FirewallRule:
    port: int
    proto: str
    sources: tuple[str, ...]
    comment: str


@dataclass(frozen=True)
class Firewall:
    enabled: bool = True
    default_inbound: str = "drop"
    ssh_port: int = 22
    ssh_sources: tuple[str, ...] = ()
    allow: tuple[FirewallRule, ...] = ()


@dataclass(frozen=True)
class AuditRules:
    enabled: bool = True
    permissions: str = "rwa"
    key_prefix: str = "baomi"


@dataclass(frozen=True)
class Apps:
    deny: tuple[str, ...] = ("wechat", "WeChat.exe", "qq", "QQ.exe", "dingtalk", "telegram",
                             "Telegram", "thunderbird", "skype", "whatsapp")
    sync_folders: tuple[str, ...] = ("Dropbox", "OneDrive", "Nextcloud", "BaiduNetdisk")


@dataclass(frozen=True)
class Destruction:
    overwrite_passes: int = 1
    require_supervisor: bool = True


@dataclass(frozen=True)
class Agent:
    rescan_minutes: int = 60
    hash: str = "sha256"
    max_hash_mb: int = 1024
    spool_dir: str = "/var/lib/baomi-agent/spool"
    spool_max_mb: int = 256
    batch_size: int = 500
    ship_interval_seconds: int = 5
    self_check_minutes: int = 15


@dataclass(frozen=True)
class Collector:
    url: str = "https://collector.example.internal:8443"
    listen_port: int = 8443
    database: str = "sqlite:////var/lib/baomi-collector/collector.db"
    alert_min_severity: str = "critical"
    alert_webhook: str | None = None
    alert_syslog: bool = True
    agent_silent_minutes: int = 30
    agent_silent_severity: str = "high"
    records: str = "local"  # where escrow, ledger, account and wipe records live


@dataclass(frozen=True)
class Reporting:
    formats: tuple[str, ...] = ("terminal", "junit", "json", "html")
    report_dir: str = "/var/lib/baomi/reports"
    history_runs: int = 52
    schedule: str = "weekly"  # systemd OnCalendar= of the collector host's `baomi audit --upload`


@dataclass(frozen=True)
class Waiver:
    clause: str | None
    control: str | None
    hosts: tuple[str, ...]
    reason: str
    approver: str
    expires: dt.date


@dataclass(frozen=True)
class Policy:
    """The whole policy.  ``source`` is the file it came from (for messages)."""

    organisation: str
    levels: dict[str, Level]
    sensitive_paths: tuple[SensitivePath, ...]
    marking: str
    disk_encryption: DiskEncryption
    usb: Usb
    screen_lock: ScreenLock
    passwords: Passwords
    ssh: Ssh
    backup: Backup
    accounts: Accounts
    offboarding: Offboarding
    firewall: Firewall
    audit_rules: AuditRules
    apps: Apps
    destruction: Destruction
    agent: Agent
    collector: Collector
    reporting: Reporting
    waivers: tuple[Waiver, ...]
    core_dumps: CoreDumps
    login_defaults: LoginDefaults
    kernel: Kernel
    antivirus: Antivirus
    log_forwarding: LogForwarding
    ssh_guard: SshGuard
    source: str = "<policy>"
    # Not errors: the policy loads and is used (an expired waiver simply stops waiving; every
    # command still works the morning after it expires); `baomi policy check` lists them.
    warnings: tuple[Problem, ...] = ()

    def level(self, name: str) -> Level:
        return self.levels[name]

    def paths_for(self, groups: set[str]) -> list[SensitivePath]:
        """The sensitive paths that apply to a host in these inventory groups."""
        return [p for p in self.sensitive_paths if "all" in p.groups or groups & set(p.groups)]


DEFAULT_LEVELS = {
    "秘密": Level("秘密", "secret", 1, "medium", 0o640, 0o750, False, False, 365 * 5),
    "机密": Level("机密", "confidential", 2, "high", 0o640, 0o750, True, True, 365 * 5),
    "绝密": Level("绝密", "top-secret", 3, "critical", 0o600, 0o700, True, True, 365 * 10),
}


# --- reading ------------------------------------------------------------------------------

TOP_KEYS = ("version", "organisation", "levels", "sensitive_paths", "marking",
            "disk_encryption", "usb", "screen_lock", "passwords", "ssh", "backup", "accounts",
            "offboarding", "firewall", "audit_rules", "apps", "destruction", "agent",
            "collector", "reporting", "waivers", "core_dumps", "login_defaults", "kernel",
            "antivirus", "log_forwarding", "ssh_guard")
CONTROL_NAMES = ("levels", "sensitive_paths", "marking", "disk_encryption", "usb",
                 "screen_lock", "passwords", "ssh", "backup", "accounts", "offboarding",
                 "firewall", "audit_rules", "apps", "destruction", "agent", "collector",
                 "reporting", "core_dumps", "login_defaults", "kernel",
                 "antivirus", "log_forwarding", "ssh_guard")

name = text(POSIX_NAME, "a POSIX user or group name (lower case, digits, _ and -)", 32)
group_name = text(GROUP_NAME, "an inventory group or host name", 63)
word = text(r"[A-Za-z0-9_.@+-]{1,128}", "a name without spaces", 128)
free_text = text(None, "text", 500)


def _section(ctx: Context, top: MapReader, key: str) -> MapReader:
    return MapReader(ctx, top.raw(key), key)


def _items(ctx: Context, node: yaml.Node | None, where: str) -> list[yaml.Node]:
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        ctx.report(node, f"{where}: expected a list, found {describe(node)}",
                   "write one '- ...' entry per item")
        return []
    return list(node.value)


def _list(ctx: Context, reader: MapReader, key: str, item: Callable[[yaml.Node], T],
          default: tuple[T, ...], min_items: int = 0) -> tuple[T, ...]:
    node = reader.raw(key)
    if node is None:
        return default
    return tuple(listof(item, min_items=min_items)(ctx, node, f"{reader.where}.{key}"))


def _levels(ctx: Context, node: yaml.Node | None) -> dict[str, Level]:
    if node is None:
        return dict(DEFAULT_LEVELS)
    top = MapReader(ctx, node, "levels")
    levels: dict[str, Level] = {}
    for rank, (level_name, (key_node, _)) in enumerate(top.entries.items(), start=1):
        r = MapReader(ctx, top.raw(level_name), f"levels.{level_name}")
        d = DEFAULT_LEVELS.get(level_name, DEFAULT_LEVELS["机密"])
        level = Level(
            name=level_name,
            english=r.get("english", word, level_name),
            rank=r.get("rank", integer(1, 99), rank),
            severity=r.get("severity", choice(SEVERITIES), d.severity),
            max_file_mode=r.get("max_file_mode", file_mode, d.max_file_mode),
            max_dir_mode=r.get("max_dir_mode", file_mode, d.max_dir_mode),
            encryption=r.get("encryption", boolean, d.encryption),
            audit=r.get("audit", boolean, d.audit),
            retention_days=r.get("retention_days", integer(1, 36_500, "days"),
                                 d.retention_days),
        )
        r.done()
        for attr in ("max_file_mode", "max_dir_mode"):
            mode = getattr(level, attr)
            if mode & 0o007:
                ctx.report(r.raw(attr) or key_node,
                           f"levels.{level_name}.{attr}: {mode:04o} gives access to everyone",
                           "no level may allow world access (R-ACL): the last digit must be 0")
        levels[level_name] = level
    top.done()  # every key was read as a level name: nothing is unknown here
    if not levels and top.present:
        ctx.report(node, "levels: no classification level is defined",
                   "define at least one level, e.g. 秘密 / 机密 / 绝密")
    return levels or dict(DEFAULT_LEVELS)


def _sensitive_paths(ctx: Context, node: yaml.Node | None,
                     levels: dict[str, Level]) -> tuple[SensitivePath, ...]:
    out: list[SensitivePath] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(_items(ctx, node, "sensitive_paths")):
        where = f"sensitive_paths[{index}]"
        r = MapReader(ctx, item, where)
        if not r.present:
            continue
        path = r.get("path", absolute_path, "", required=True)
        level = r.get("level", text(None, "a level name"), "", required=True)
        entry = SensitivePath(
            path=path,
            level=level,
            owner=r.get("owner", name, "root"),
            group=r.get("group", name, "root"),
            retention_days=r.get("retention_days", integer(1, 36_500, "days"), None),
            groups=_list(ctx, r, "groups", group_name, ("all",), min_items=1),
            line=position(item)[0],
        )
        r.done()
        if level and level not in levels:
            ctx.report(r.raw("level"), f"{where}.level: '{level}' is not a defined level",
                       "defined levels: " + ", ".join(levels))
        if path:
            if path == "/":
                ctx.report(r.raw("path"), f"{where}.path: '/' cannot be a sensitive path",
                           "name the directory that holds customer data")
            if path in seen:
                ctx.report(r.raw("path"), f"{where}.path: {path} is listed twice (first on "
                           f"line {seen[path]})", "list each sensitive path once")
            else:
                seen[path] = position(r.raw("path"))[0]
        out.append(entry)
    return tuple(out)


def _volumes(ctx: Context, reader: MapReader) -> tuple[Volume, ...]:
    out: list[Volume] = []
    for index, item in enumerate(_items(ctx, reader.raw("volumes"), "disk_encryption.volumes")):
        r = MapReader(ctx, item, f"disk_encryption.volumes[{index}]")
        if not r.present:
            continue
        out.append(Volume(
            device=r.get("device", absolute_path, "", required=True),
            mount=r.get("mount", absolute_path, "", required=True),
            filesystem=r.get("filesystem", choice(("ext4", "xfs", "btrfs")), "ext4"),
            groups=_list(ctx, r, "groups", group_name, ("all",), min_items=1),
            name=r.get("name", mapper_name, ""),
        ))
        # A permanent, group-wide permission to destroy data is gone: one wipe of one disk
        # (host + serial + ticket) is allowed on the controller instead.  `false` stays valid.
        if r.get("wipe_allowed", boolean, False):
            ctx.report(r.raw("wipe_allowed"), f"disk_encryption.volumes[{index}].wipe_allowed: "
                       "a permanent permission to wipe is no longer accepted",
                       "remove it; allow one wipe of one disk with `baomi disk allow-wipe HOST "
                       "DEVICE --serial SERIAL --ticket TICKET`")
        r.done()
    return tuple(_named(v) for v in out)


mapper_name = text(r"[a-z0-9][a-z0-9_-]{0,62}", "a device-mapper name (lower case, digits, _ "
                   "and -)", 63)


def _named(volume: Volume) -> Volume:
    """Default mapper name from the mount point: /srv/data → baomi-srv-data."""
    if volume.name:
        return volume
    slug = re.sub(r"[^a-z0-9]+", "-", volume.mount.lower()).strip("-") or "root"
    return Volume(volume.device, volume.mount, volume.filesystem, volume.groups,
                  f"baomi-{slug}"[:63])


def _disk_encryption(ctx: Context, r: MapReader) -> DiskEncryption:
    d = DiskEncryption()
    out = DiskEncryption(
        enabled=r.get("enabled", boolean, d.enabled),
        cipher=r.get("cipher", choice(("aes-xts-plain64", "serpent-xts-plain64",
                                       "twofish-xts-plain64")), d.cipher),
        key_size=r.get("key_size", choice_int((256, 512)), d.key_size),
        pbkdf=r.get("pbkdf", choice(("argon2id", "argon2i", "pbkdf2")), d.pbkdf),
        pbkdf_force_iterations=r.get("pbkdf_force_iterations", integer(4, 10_000_000), None),
        approved_ciphers=_list(ctx, r, "approved_ciphers",
                               choice(("aes-xts-plain64", "serpent-xts-plain64",
                                       "twofish-xts-plain64")), d.approved_ciphers, 1),
        min_key_size=r.get("min_key_size", choice_int((256, 512)), d.min_key_size),
        require_root_on=_list(ctx, r, "require_root_on", group_name, d.require_root_on),
        volumes=_volumes(ctx, r),
    )
    r.done()
    if out.cipher not in out.approved_ciphers:
        ctx.report(r.raw("cipher") or r.node, f"disk_encryption.cipher: {out.cipher} is not "
                   "among approved_ciphers", "approved: " + ", ".join(out.approved_ciphers))
    if out.key_size < out.min_key_size:
        ctx.report(r.raw("key_size") or r.node, f"disk_encryption.key_size: {out.key_size} is "
                   f"below min_key_size {out.min_key_size}", "raise key_size")
    return out


def choice_int(options: tuple[int, ...]) -> Callable[[yaml.Node], int]:
    def convert(node: yaml.Node) -> int:
        value = integer(min(options), max(options))(node)
        if value not in options:
            raise Invalid(f"{value} is not allowed",
                          "allowed: " + ", ".join(str(o) for o in options))
        return value

    return convert


HEX4 = r"[0-9a-f]{4}"


def usb_device(node: yaml.Node) -> UsbDevice:
    """``"0781:5567"`` or ``"0781:5567:4C530001"``, optionally as a mapping with a description."""
    description = ""
    if isinstance(node, yaml.MappingNode):
        entries = {str(k.value): v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        unknown = set(entries) - {"id", "description"}
        if unknown:
            raise Invalid(f"unknown key '{sorted(unknown)[0]}'", "known keys: id, description")
        if "description" in entries:
            description = text(None, "a description")(entries["description"])
        if "id" not in entries:
            raise Invalid("'id' is required", "write id: 'vendor:product[:serial]'")
        node = entries["id"]
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(f"expected 'vendor:product[:serial]', found {describe(node)}",
                      "e.g. '0781:5567' or '0781:5567:4C530001'")
    value = str(node.value)
    parts = value.split(":", 2)
    if len(parts) < 2 or not re.fullmatch(HEX4, parts[0].lower()) or not re.fullmatch(
            HEX4, parts[1].lower()):
        raise Invalid(f"{value!r} is not a USB device id",
                      "write 'vendor:product[:serial]' with 4 hex digits each, e.g. '0781:5567'")
    serial = parts[2] if len(parts) == 3 else None
    if serial is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,126}", serial):
        raise Invalid(f"serial {serial!r} has characters USBGuard rules cannot carry",
                      "letters, digits, '.', '_' and '-'")
    return UsbDevice(parts[0].lower(), parts[1].lower(), serial, description)


def _usb(ctx: Context, r: MapReader) -> Usb:
    d = Usb()
    out = Usb(
        block_storage=r.get("block_storage", boolean, d.block_storage),
        audit_only=r.get("audit_only", boolean, d.audit_only),
        allow_hid=r.get("allow_hid", boolean, d.allow_hid),
        allowed=_list(ctx, r, "allowed", usb_device, d.allowed),
        refuse_buses=tuple(dict.fromkeys(_list(ctx, r, "refuse_buses", choice(BUSES),
                                               d.refuse_buses))),
    )
    r.done()
    if not out.allow_hid and r.has("allow_hid"):
        ctx.report(r.raw("allow_hid"), "usb.allow_hid: false would lock out keyboards and mice "
                   "on every workstation", "keep allow_hid: true")
    return out


def _screen_lock(ctx: Context, r: MapReader) -> ScreenLock:
    d = ScreenLock()
    out = ScreenLock(
        idle_seconds=r.get("idle_seconds", integer(60, 3600, "seconds"), d.idle_seconds),
        lock_delay_seconds=r.get("lock_delay_seconds", integer(0, 300, "seconds"),
                                 d.lock_delay_seconds),
        shell_tmout_seconds=r.get("shell_tmout_seconds", integer(60, 43_200, "seconds"),
                                  d.shell_tmout_seconds),
        ssh_client_alive_interval=r.get("ssh_client_alive_interval",
                                        integer(30, 3600, "seconds"),
                                        d.ssh_client_alive_interval),
        ssh_client_alive_count_max=r.get("ssh_client_alive_count_max", integer(1, 10),
                                         d.ssh_client_alive_count_max),
        bootloader_password=r.get("bootloader_password", boolean, d.bootloader_password),
    )
    r.done()
    return out


def _passwords(ctx: Context, r: MapReader) -> Passwords:
    d = Passwords()
    out = Passwords(
        min_length=r.get("min_length", integer(8, 128, "characters"), d.min_length),
        min_classes=r.get("min_classes", integer(1, 4, "character classes"), d.min_classes),
        max_days=r.get("max_days", integer(1, 365, "days"), d.max_days),
        min_days=r.get("min_days", integer(0, 365, "days"), d.min_days),
        warn_days=r.get("warn_days", integer(0, 365, "days"), d.warn_days),
    )
    r.done()
    if out.min_days >= out.max_days:
        ctx.report(r.raw("min_days") or r.node, f"passwords.min_days: {out.min_days} is not "
                   f"below max_days {out.max_days}", "min_days must be less than max_days")
    if out.warn_days >= out.max_days:
        ctx.report(r.raw("warn_days") or r.node, f"passwords.warn_days: {out.warn_days} is not "
                   f"below max_days {out.max_days}", "warn_days must be less than max_days")
    return out


def banner_text(node: yaml.Node) -> str:
    """The banner sshd, getty and telnet-style clients show: plain lines, no escapes."""
    value = text(None, "the banner text (Chinese and English)", 2000)(node)
    if "\\" in value or any(ord(c) < 32 and c != "\n" for c in value):
        raise Invalid("the banner has a backslash or control character",
                      "plain text lines: getty reads backslash escapes in /etc/issue")
    return value if value.endswith("\n") else value + "\n"


def _ssh(ctx: Context, r: MapReader) -> Ssh:
    d = Ssh()
    out = Ssh(
        password_authentication=r.get("password_authentication", boolean,
                                      d.password_authentication),
        permit_root_login=r.get("permit_root_login", choice(("no", "prohibit-password")),
                                d.permit_root_login),
        ciphers=_list(ctx, r, "ciphers", choice(APPROVED_CIPHERS), d.ciphers, 1),
        macs=_list(ctx, r, "macs", choice(APPROVED_MACS), d.macs, 1),
        kex=_list(ctx, r, "kex", choice(APPROVED_KEX), d.kex, 1),
        host_key_algorithms=_list(ctx, r, "host_key_algorithms",
                                  choice(APPROVED_HOST_KEY_ALGORITHMS), d.host_key_algorithms, 1),
        max_auth_tries=r.get("max_auth_tries", integer(1, 6, "attempts"), d.max_auth_tries),
        login_grace_seconds=r.get("login_grace_seconds", integer(10, 120, "seconds"),
                                  d.login_grace_seconds),
        forwarding_groups=_list(ctx, r, "forwarding_groups", name, d.forwarding_groups),
        banner=r.get("banner", banner_text, d.banner),
    )
    r.done()
    if out.password_authentication:
        ctx.report(r.raw("password_authentication"), "ssh.password_authentication: true lets "
                   "passwords cross the network and be guessed", "R-TLS requires false")
    return out


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def repository(node: yaml.Node) -> str:
    """An absolute path, or ``rclone:USER@HOST:/path``: restic through ``rclone serve restic
    --append-only`` over SSH as USER (a client can add snapshots, never remove them).  The
    account is never implied: without one the SSH default would be root on the backup host."""
    value = text(None, "a restic repository")(node)
    if value.startswith("/"):
        return value
    remote = re.fullmatch(r"(?P<scheme>[a-z]+):(?:(?P<user>[^@:/]*)@)?(?P<host>[^@:/]+):"
                          r"(?P<path>/\S*)", value)
    if remote is None:
        raise Invalid(f"{value!r} is not a repository baomi can use",
                      "an absolute path or rclone:USER@HOST:/path ({host} is replaced by "
                      "the host)")
    if not remote["user"]:
        raise Invalid(f"{value!r} names no account on the backup host",
                      f"{remote['scheme']}:USER@{remote['host']}:{remote['path']} with an "
                      "unprivileged account of its own (never root, no login shell)")
    if remote["user"] == "root" or not re.fullmatch(POSIX_NAME, remote["user"]):
        raise Invalid(f"{remote['user']!r} cannot hold the repositories",
                      "an unprivileged account (never root, no login shell)")
    if remote["scheme"] != "rclone":
        raise Invalid(f"{value!r}: over {remote['scheme']} every client could delete its "
                      "snapshots", f"rclone:{remote['user']}@{remote['host']}:{remote['path']}"
                      " (restic through rclone serve restic --append-only over SSH)")
    return value


def _backup(ctx: Context, r: MapReader, paths: tuple[SensitivePath, ...]) -> Backup:
    d = Backup()
    out = Backup(
        enabled=r.get("enabled", boolean, d.enabled),
        interval_days=r.get("interval_days", integer(1, 31, "days"), d.interval_days),
        weekday=r.get("weekday", choice(WEEKDAYS), d.weekday),
        time=r.get("time", text(r"([01][0-9]|2[0-3]):[0-5][0-9]", "a time HH:MM"), d.time),
        randomized_delay_minutes=r.get("randomized_delay_minutes", integer(0, 720, "minutes"),
                                       d.randomized_delay_minutes),
        grace_hours=r.get("grace_hours", integer(0, 168, "hours"), d.grace_hours),
        keep=r.get("keep", integer(2, 1000, "snapshots"), d.keep),
        keep_monthly=r.get("keep_monthly", integer(0, 240, "months"), d.keep_monthly),
        forget_min_percent=r.get("forget_min_percent", integer(0, 100, "percent"),
                                 d.forget_min_percent),
        repository=r.get("repository", repository, d.repository),
        # () = the sensitive paths of each host's groups (Policy.paths_for), decided per host.
        paths=_list(ctx, r, "paths", absolute_path, d.paths),
        mount_points=_list(ctx, r, "mount_points", absolute_path, d.mount_points),
        exclude=_list(ctx, r, "exclude", text(None, "an exclude pattern"), d.exclude),
        check_every_days=r.get("check_every_days", integer(1, 90, "days"), d.check_every_days),
        restore_sample_files=r.get("restore_sample_files", integer(1, 1000, "files"),
                                   d.restore_sample_files),
    )
    r.done()
    return out


def _accounts(ctx: Context, r: MapReader) -> Accounts:
    d = Accounts()
    out = Accounts(min_uid=r.get("min_uid", integer(500, 60_000), d.min_uid),
                   require_approval=r.get("require_approval", boolean, d.require_approval))
    r.done()
    return out


def _offboarding(ctx: Context, r: MapReader) -> Offboarding:
    d = Offboarding()
    out = Offboarding(
        freeze_on_trigger=r.get("freeze_on_trigger", boolean, d.freeze_on_trigger),
        delete_when=r.get("delete_when", choice(("end_of_following_month",)), d.delete_when),
        custodian=r.get("custodian", name, d.custodian),
        archive_dir=r.get("archive_dir", absolute_path, d.archive_dir),
        protected_accounts=_list(ctx, r, "protected_accounts", name, d.protected_accounts),
        kill_sessions=r.get("kill_sessions", boolean, d.kill_sessions),
    )
    r.done()
    if not out.freeze_on_trigger:
        ctx.report(r.raw("freeze_on_trigger"), "offboarding.freeze_on_trigger: false leaves "
                   "a departed employee's account usable", "R-OFF requires true")
    if "root" not in out.protected_accounts:
        out = Offboarding(out.freeze_on_trigger, out.delete_when, out.custodian,
                          out.archive_dir, ("root", *out.protected_accounts), out.kill_sessions)
    return out


def cidr(node: yaml.Node) -> str:
    value = text(None, "an address or network")(node)
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise Invalid(f"{value!r} is not an IP address or network",
                      "e.g. 10.0.0.0/8 or 192.0.2.7") from None


def _firewall(ctx: Context, r: MapReader) -> Firewall:
    d = Firewall()
    rules: list[FirewallRule] = []
    for index, item in enumerate(_items(ctx, r.raw("allow"), "firewall.allow")):
        rr = MapReader(ctx, item, f"firewall.allow[{index}]")
        if not rr.present:
            continue
        rules.append(FirewallRule(
            port=rr.get("port", integer(1, 65_535), 0, required=True),
            proto=rr.get("proto", choice(("tcp", "udp")), "tcp"),
            sources=_list(ctx, rr, "from", cidr, ()),
            comment=rr.get("comment", free_text, ""),
        ))
        rr.done()
    out = Firewall(
        enabled=r.get("enabled", boolean, d.enabled),
        default_inbound=r.get("default_inbound", choice(("drop", "reject")), d.default_inbound),
        ssh_port=r.get("ssh_port", integer(1, 65_535), d.ssh_port),
        ssh_sources=_list(ctx, r, "ssh_from", cidr, d.ssh_sources),
        allow=tuple(rules),
    )
    r.done()
    return out


def _audit_rules(ctx: Context, r: MapReader) -> AuditRules:
    d = AuditRules()
    out = AuditRules(
        enabled=r.get("enabled", boolean, d.enabled),
        permissions=r.get("permissions", text(r"(?!.*(.).*\1)[rwxa]{1,4}",
                                              "a set of r, w, x, a"), d.permissions),
        key_prefix=r.get("key_prefix", text(r"[a-z][a-z0-9_-]{0,15}", "a short key"),
                         d.key_prefix),
    )
    r.done()
    return out


def _apps(ctx: Context, r: MapReader) -> Apps:
    d = Apps()
    out = Apps(deny=_list(ctx, r, "deny", word, d.deny),
               sync_folders=_list(ctx, r, "sync_folders", word, d.sync_folders))
    r.done()
    return out


def _destruction(ctx: Context, r: MapReader) -> Destruction:
    d = Destruction()
    out = Destruction(
        overwrite_passes=r.get("overwrite_passes", integer(1, 7), d.overwrite_passes),
        require_supervisor=r.get("require_supervisor", boolean, d.require_supervisor))
    r.done()
    return out


def _agent(ctx: Context, r: MapReader) -> Agent:
    d = Agent()
    out = Agent(
        rescan_minutes=r.get("rescan_minutes", integer(1, 1440, "minutes"), d.rescan_minutes),
        hash=r.get("hash", choice(("sha256", "blake2b")), d.hash),
        max_hash_mb=r.get("max_hash_mb", integer(1, 1_048_576, "MiB"), d.max_hash_mb),
        spool_dir=r.get("spool_dir", absolute_path, d.spool_dir),
        spool_max_mb=r.get("spool_max_mb", integer(1, 65_536, "MiB"), d.spool_max_mb),
        batch_size=r.get("batch_size", integer(1, 10_000, "events"), d.batch_size),
        ship_interval_seconds=r.get("ship_interval_seconds", integer(1, 3600, "seconds"),
                                    d.ship_interval_seconds),
        self_check_minutes=r.get("self_check_minutes", integer(1, 1440, "minutes"),
                                 d.self_check_minutes),
    )
    r.done()
    return out


def url(node: yaml.Node) -> str:
    value = text(None, "a URL")(node)
    if not re.fullmatch(r"https://[A-Za-z0-9_.\[\]:-]+(:\d{1,5})?(/\S*)?", value):
        raise Invalid(f"{value!r} is not an https:// URL",
                      "agents talk to the collector only over TLS (R-TLS): https://HOST:PORT")
    return value


def webhook_url(node: yaml.Node) -> str:
    """An alert webhook: https://, or plain http:// only to this host (a local relay)."""
    value = text(None, "a URL")(node)
    if re.fullmatch(r"http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost)"
                    r"(:\d{1,5})?(/\S*)?", value):
        return value
    if not re.fullmatch(r"https://[A-Za-z0-9_.\[\]:-]+(:\d{1,5})?(/\S*)?", value):
        raise Invalid(f"{value!r} is not an https:// URL",
                      "alerts leave the collector over TLS (R-TLS); http:// only to loopback")
    return value


def database(node: yaml.Node) -> str:
    value = text(None, "a database URL")(node)
    if not re.fullmatch(r"(sqlite:///\S+|postgresql://\S+)", value):
        raise Invalid(f"{value!r} is not a supported database",
                      "sqlite:////absolute/path.db or postgresql://user@host/dbname")
    return value


def _collector(ctx: Context, r: MapReader) -> Collector:
    d = Collector()
    out = Collector(
        url=r.get("url", url, d.url),
        listen_port=r.get("listen_port", integer(1, 65_535), d.listen_port),
        database=r.get("database", database, d.database),
        alert_min_severity=r.get("alert_min_severity", choice(SEVERITIES),
                                 d.alert_min_severity),
        alert_webhook=r.get("alert_webhook", webhook_url, d.alert_webhook),
        alert_syslog=r.get("alert_syslog", boolean, d.alert_syslog),
        agent_silent_minutes=r.get("agent_silent_minutes", integer(1, 10_080, "minutes"),
                                   d.agent_silent_minutes),
        agent_silent_severity=r.get("agent_silent_severity", choice(SEVERITIES),
                                    d.agent_silent_severity),
        records=r.get("records", choice(("local", "collector")), d.records),
    )
    r.done()
    return out


def _reporting(ctx: Context, r: MapReader) -> Reporting:
    d = Reporting()
    out = Reporting(
        formats=_list(ctx, r, "formats", choice(("terminal", "junit", "json", "html")),
                      d.formats, 1),
        report_dir=r.get("report_dir", absolute_path, d.report_dir),
        history_runs=r.get("history_runs", integer(1, 10_000, "runs"), d.history_runs),
        schedule=r.get("schedule", text(r"[A-Za-z0-9*:,./~ -]{1,64}", "a systemd OnCalendar "
                                        "expression (weekly, daily, Mon *-*-* 02:00)", 64),
                       d.schedule),
    )
    r.done()
    return out


def _waivers(ctx: Context, node: yaml.Node | None, today: dt.date,
             warnings: list[Problem]) -> tuple[Waiver, ...]:
    """The waivers; an expired one is a warning in ``warnings`` (it loads and stops waiving:
    :mod:`baomi.waivers` decides), not a problem that would stop every command."""
    out: list[Waiver] = []
    for index, item in enumerate(_items(ctx, node, "waivers")):
        where = f"waivers[{index}]"
        r = MapReader(ctx, item, where)
        if not r.present:
            continue
        clause = r.get("clause", choice(tuple(CLAUSES)), None)
        control = r.get("control", choice(CONTROL_NAMES), None)
        waiver = Waiver(
            clause=clause,
            control=control,
            hosts=_list(ctx, r, "hosts", group_name, (), min_items=1),
            reason=r.get("reason", free_text, "", required=True),
            approver=r.get("approver", free_text, "", required=True),
            expires=r.get("expires", date, today, required=True),
        )
        r.done()
        if not r.has("hosts"):
            ctx.report(item, f"{where}: 'hosts' is required",
                       "name the hosts or inventory groups the waiver covers")
        if clause is None and control is None and not (r.has("clause") or r.has("control")):
            ctx.report(item, f"{where}: names neither a clause nor a control",
                       "add clause: R-... or control: <section>")
        if r.has("expires") and waiver.expires < today:
            line, column = position(r.raw("expires"))
            warnings.append(Problem(ctx.file, line, column, f"{where}.expires: {waiver.expires} "
                                    f"is in the past (today is {today}): it no longer waives",
                                    "renew the waiver with a future date or remove it"))
        elif r.has("expires") and (waiver.expires - today).days > 366:
            ctx.report(r.raw("expires"), f"{where}.expires: {waiver.expires} is more than a "
                       "year away", "waivers last at most one year; review and renew")
        out.append(waiver)
    return tuple(out)


def _parse(ctx: Context, text_: str) -> yaml.Node | None:
    try:
        return yaml.compose(text_, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "the file is not valid YAML"
        ctx.problems.append(Problem(ctx.file, line, column, f"not valid YAML: {what}",
                                    "check indentation, quotes and colons"))
    except yaml.YAMLError as exc:
        ctx.problems.append(Problem(ctx.file, 1, 1, f"not valid YAML: {exc}",
                                    "save the policy as UTF-8 YAML text"))
    except RecursionError:
        ctx.problems.append(Problem(ctx.file, 1, 1, "the YAML is nested too deeply",
                                    "a policy is a few levels deep"))
    return None


def load_text(content: str, source: str = "<policy>", *, today: dt.date | None = None) -> Policy:
    """Parse and validate a policy; raise :class:`PolicyError` listing every problem."""
    ctx = Context(source)
    today = today or dt.date.today()
    root = _parse(ctx, content)
    if ctx.problems:
        raise PolicyError(ctx.problems)
    if root is not None and not isinstance(root, yaml.MappingNode):
        ctx.report(root, f"the policy must be a mapping of sections, found {describe(root)}",
                   "start with e.g. 'levels:' or 'screen_lock:'")
        raise PolicyError(ctx.problems)
    top = MapReader(ctx, root, "policy")
    warnings: list[Problem] = []
    top.get("version", integer(1, 1), 1)
    levels = _levels(ctx, top.raw("levels"))
    paths = _sensitive_paths(ctx, top.raw("sensitive_paths"), levels)

    def section(key: str, build: Callable[[Context, MapReader], T]) -> T:
        return build(ctx, _section(ctx, top, key))

    policy = Policy(
        organisation=top.get("organisation", free_text, ""),
        levels=levels,
        sensitive_paths=paths,
        marking=top.get("marking", choice(("xattr", "file")), "xattr"),
        disk_encryption=section("disk_encryption", _disk_encryption),
        usb=section("usb", _usb),
        screen_lock=section("screen_lock", _screen_lock),
        passwords=section("passwords", _passwords),
        ssh=section("ssh", _ssh),
        backup=_backup(ctx, _section(ctx, top, "backup"), paths),
        accounts=section("accounts", _accounts),
        offboarding=section("offboarding", _offboarding),
        firewall=section("firewall", _firewall),
        audit_rules=section("audit_rules", _audit_rules),
        apps=section("apps", _apps),
        destruction=section("destruction", _destruction),
        agent=section("agent", _agent),
        collector=section("collector", _collector),
        reporting=section("reporting", _reporting),
        waivers=_waivers(ctx, top.raw("waivers"), today, warnings),
        core_dumps=section("core_dumps", core_dumps),
        login_defaults=section("login_defaults", login_defaults),
        kernel=section("kernel", kernel),
        antivirus=section("antivirus", antivirus),
        log_forwarding=section("log_forwarding", log_forwarding),
        ssh_guard=section("ssh_guard", ssh_guard),
        source=source,
        warnings=tuple(warnings),
    )
    top.done()
    if ctx.problems:
        raise PolicyError(ctx.problems)
    return policy


def default_policy_path() -> str:
    """Where every command looks without --policy: ``$BAOMI_POLICY``, else ``./policy.yaml``,
    else ``/etc/baomi/policy.yaml``."""
    import os

    env = os.environ.get("BAOMI_POLICY")
    if env:
        return env
    if Path("policy.yaml").exists():
        return "policy.yaml"
    return "/etc/baomi/policy.yaml"


def load(path: str | Path, *, today: dt.date | None = None) -> Policy:
    """Read a policy file.  A missing or unreadable file is a :class:`PolicyError` too."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyError([Problem(source, 1, 1, f"cannot read the policy: {reason}",
                                   "give the path of a readable policy YAML file")]) from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(source, line, 1, "the file is not UTF-8 text",
                                   "save the policy as UTF-8")]) from None
    return load_text(content, source, today=today)


def as_dict(obj: Any) -> Any:
    """Plain JSON-able data of a policy object (modes as octal text, dates as ISO)."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            if f.name == "line":
                continue
            value = getattr(obj, f.name)
            out[f.name] = f"{value:04o}" if f.name.endswith("_mode") else as_dict(value)
        return out
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


__all__ = ["Policy", "PolicyError", "Problem", "as_dict", "convert_at", "default_policy_path",
           "load", "load_text"]
