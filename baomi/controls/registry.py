"""The one registry of controls: name, clauses, summary, place in the baseline.

Everything else is derived from it: each control module's checks take their clauses from here,
``baomi.deploy.common.BASELINE`` is :data:`BASELINE`, ``policy explain`` lists these.  It holds
metadata only (no control module is imported here), so any module may import it.

A *control* fits the contract of :mod:`baomi.controls.contract` (desired → observe → parse →
compare) and is named the same everywhere: policy section ``name``, core
``baomi/controls/<name>.py``, deploy ``deploy/<name>.py``, checks ``checks/test_<name>.py``.
Policy sections that are not controls (procedures, services, settings) are in :data:`SECTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """A control (``kind == "control"``) or another policy section that serves clauses."""

    name: str
    clauses: tuple[str, ...]
    summary: str
    baseline: bool = False  # applied by `baomi apply`, in registry order
    kind: str = "control"  # control | procedure (own command) | service | settings


# In baseline order: a LUKS volume is mounted before the sensitive directories are made on it.
CONTROLS: tuple[Entry, ...] = (
    Entry("screen_lock", ("R-LOCK",),
          "GNOME idle lock, shell TMOUT, SSH idle, bootloader password", baseline=True),
    Entry("ssh", ("R-TLS", "R-LOG"),
          "sshd: keys only, approved ciphers, MACs, KEX and host keys, no forwarding, VERBOSE "
          "logs, confidentiality banner", baseline=True),
    Entry("firewall", ("R-SEC",), "nftables default-deny inbound", baseline=True),
    Entry("ssh_guard", ("R-SEC",), "fail2ban bans addresses that fail SSH logins repeatedly",
          baseline=True),
    Entry("kernel", ("R-SEC",), "kernel hardening sysctls; dccp, sctp, rds, tipc refused",
          baseline=True),
    Entry("disk_encryption", ("R-ENC",), "LUKS2 data volumes with escrowed recovery keys",
          baseline=True),
    Entry("sensitive_paths", ("R-ACL", "R-CLS"),
          "owner, group, mode and level marking of directories holding customer data",
          baseline=True),
    # After sensitive_paths: clamonacc watches folders that must exist.
    Entry("antivirus", ("R-SEC",),
          "virus protection (ClamAV): on-access and daily scans of the sensitive paths, "
          "quarantine, signatures from the controller's mirror", baseline=True),
    Entry("audit_rules", ("R-LOG",), "kernel audit rules on sensitive paths", baseline=True),
    Entry("log_forwarding", ("R-LOG",),
          "auth and audit logs to the log host over TLS, disk-queued; receiving side there",
          baseline=True),
    Entry("passwords", ("R-PWD",), "pam_pwquality length/classes, password ageing",
          baseline=True),
    Entry("login_defaults", ("R-ACL", "R-PWD"),
          "default umask 027 (login.defs, pam_umask), password hashing method and cost",
          baseline=True),
    Entry("core_dumps", ("R-ACL", "R-DST"),
          "no core dumps: suid_dumpable 0, hard core 0, systemd-coredump stores nothing",
          baseline=True),
    Entry("usb", ("R-USB", "R-DEV"),
          "usb-storage, firewire, thunderbolt, SD refused; USBGuard allow-list", baseline=True),
    Entry("backup", ("R-BAK",), "weekly encrypted restic backup, continuity, restore test",
          baseline=True),
    # Applied by `baomi account apply` from the approved requests, not by `baomi apply`.
    Entry("accounts", ("R-PRV",), "accounts only with a recorded request and approval"),
    # The findings service on hosts of group `collector`: `baomi collector-deploy`.
    Entry("collector", ("R-INC", "R-LOG", "R-TLS", "R-AUD", "R-OFF"),
          "central record, TLS ingest, alerts on critical findings, the regular audit, HR's "
          "offboarding run as root"),
    # On every other host, enrolled with the collector: `baomi agent-deploy`.
    Entry("agent", ("R-FIM", "R-LOG", "R-SEC"),
          "resident agent: baseline, real-time watch, drift to the collector"),
)

SECTIONS: tuple[Entry, ...] = (
    Entry("levels", ("R-CLS",), "classification levels and their per-level protection",
          kind="settings"),
    Entry("marking", ("R-CLS",), "how a path's level is marked on it", kind="settings"),
    Entry("offboarding", ("R-OFF", "R-RET"),
          "freeze at once, archive to custodian, delete at the end of the following month",
          kind="procedure"),
    Entry("apps", ("R-APP", "R-DEV"),
          "deny-listed messaging apps and sync folders near customer data", kind="settings"),
    Entry("destruction", ("R-DST",), "files past retention reported, destroyed with record",
          kind="settings"),
    Entry("reporting", ("R-AUD",), "audit reports per host and clause, with history",
          kind="settings"),
)

BY_NAME: dict[str, Entry] = {e.name: e for e in CONTROLS + SECTIONS}
BASELINE: tuple[str, ...] = tuple(e.name for e in CONTROLS if e.baseline)
NAMES: tuple[str, ...] = tuple(e.name for e in CONTROLS)


def entry(name: str) -> Entry:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the registry ({', '.join(BY_NAME)})") from None
