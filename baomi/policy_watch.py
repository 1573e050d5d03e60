"""Policy sections of what watches a host: virus protection, logs off the host, SSH guessing.

Part of the policy loader (:mod:`baomi.policy` calls these builders and holds the results in
:class:`baomi.policy.Policy`); kept apart so the loader's module stays readable.  Every value
is validated here, with FILE:LINE:COL through :mod:`baomi.yamlread`, like every section.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import yaml

from baomi.yamlread import (
    Context,
    Invalid,
    MapReader,
    absolute_path,
    boolean,
    integer,
    listof,
    text,
)


@dataclass(frozen=True)
class Antivirus:
    """R-SEC 病毒防护: ClamAV with on-access scanning of the sensitive paths, a daily scan, a
    root-only quarantine, and signatures from the controller's private mirror (no internet)."""

    enabled: bool = True
    # On the controller: ClamAV databases (.cvd/.cld, or .hdb/.ndb/.ldb of your own) copied to
    # every host.  "" = none configured: only baomi's EICAR test signature is installed and the
    # signature age is reported not applicable with that reason.
    mirror: str = ""
    max_signature_age_days: int = 7
    on_access: bool = True
    scan_time: str = "03:30"
    quarantine_dir: str = "/var/lib/baomi/quarantine"
    report_days: int = 30


@dataclass(frozen=True)
class LogForwarding:
    """R-LOG 访问日志: auth and audit logs forwarded over TLS to a log host, disk-queued."""

    enabled: bool = True
    # The log host (an inventory host name, e.g. the collector's); "" = not configured.
    host: str = ""
    port: int = 6514
    queue_max_mb: int = 1024


@dataclass(frozen=True)
class SshGuard:
    """R-SEC 入侵检测: fail2ban bans an address after repeated failed SSH logins."""

    enabled: bool = True
    max_retry: int = 5
    find_time_minutes: int = 10
    ban_minutes: int = 60
    ignore: tuple[str, ...] = ()


# An inventory host name (baomi.policy.GROUP_NAME; not imported: policy imports this module).
HOST_NAME = r"[A-Za-z_][A-Za-z0-9_.-]{0,62}"
clock = text(r"([01][0-9]|2[0-3]):[0-5][0-9]", "a time HH:MM")
host_name = text(HOST_NAME, "an inventory host name", 63)


def _empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == ""


def optional_path(node: yaml.Node) -> str:
    """An absolute path, or '' for "not configured"."""
    return "" if _empty(node) else absolute_path(node)


def optional_host(node: yaml.Node) -> str:
    """An inventory host name, or '' for "not configured"."""
    return "" if _empty(node) else host_name(node)


def address(node: yaml.Node) -> str:
    value = text(None, "an IP address or network")(node)
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise Invalid(f"{value!r} is not an IP address or network",
                      "e.g. 10.0.0.0/8 or 192.0.2.7") from None


# Folders users may write in (refused as a quarantine: a user could plant links there).
SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/home", "/run/user")  # noqa: S108 (refused, not used)


def antivirus(ctx: Context, r: MapReader) -> Antivirus:
    d = Antivirus()
    out = Antivirus(
        enabled=r.get("enabled", boolean, d.enabled),
        mirror=r.get("mirror", optional_path, d.mirror),
        max_signature_age_days=r.get("max_signature_age_days", integer(1, 365, "days"),
                                     d.max_signature_age_days),
        on_access=r.get("on_access", boolean, d.on_access),
        scan_time=r.get("scan_time", clock, d.scan_time),
        quarantine_dir=r.get("quarantine_dir", absolute_path, d.quarantine_dir),
        report_days=r.get("report_days", integer(1, 3650, "days"), d.report_days),
    )
    r.done()
    if any(out.quarantine_dir == top or out.quarantine_dir.startswith(top + "/")
           for top in SHARED):
        ctx.report(r.raw("quarantine_dir"),
                   f"antivirus.quarantine_dir: {out.quarantine_dir} is shared with users",
                   "use a folder only root uses, e.g. /var/lib/baomi/quarantine")
    return out


def log_forwarding(ctx: Context, r: MapReader) -> LogForwarding:
    d = LogForwarding()
    out = LogForwarding(
        enabled=r.get("enabled", boolean, d.enabled),
        host=r.get("host", optional_host, d.host),
        port=r.get("port", integer(1, 65_535), d.port),
        queue_max_mb=r.get("queue_max_mb", integer(16, 65_536, "MiB"), d.queue_max_mb),
    )
    r.done()
    return out


def ssh_guard(ctx: Context, r: MapReader) -> SshGuard:
    d = SshGuard()
    node = r.raw("ignore")
    out = SshGuard(
        enabled=r.get("enabled", boolean, d.enabled),
        max_retry=r.get("max_retry", integer(2, 20, "attempts"), d.max_retry),
        find_time_minutes=r.get("find_time_minutes", integer(1, 1440, "minutes"),
                                d.find_time_minutes),
        ban_minutes=r.get("ban_minutes", integer(1, 525_600, "minutes"), d.ban_minutes),
        ignore=d.ignore if node is None else tuple(
            listof(address)(ctx, node, f"{r.where}.ignore")),
    )
    r.done()
    return out
