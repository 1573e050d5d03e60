"""One-time permissions to wipe one disk (R-ENC): host + device + serial + ticket, used once.

Formatting a device that holds data destroys it, so baomi never does it on a standing policy
flag.  ``baomi disk allow-wipe HOST DEVICE --serial S --ticket T`` records a permission here;
the next apply of disk_encryption on HOST may wipe DEVICE only if the disk's serial (or WWN)
there is S, never a LUKS header, never a device in use (baomi/fixes/disk_encryption.py checks
it on the host, again right before ``luksFormat``), and records the permission as consumed
*before* the host receives the script, so it can never serve twice.  A newer permission for
the same host and device supersedes an open older one.

The records are ``$BAOMI_STATE_DIR/disk/wipe-permissions.jsonl`` or the collector's stream
``wipe`` when the policy keeps records there (baomi/recordstore.py; locally baomi/records.py:
append-only JSON lines, 0600 in a 0700 folder, locked).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baomi.records import state_dir
from baomi.recordstore import WIPE, open_store

ALLOWED = "allowed"
CONSUMED = "consumed"
OPEN, USED, SUPERSEDED = "open", "consumed", "superseded"


@dataclass(frozen=True)
class Permission:
    id: str
    host: str
    device: str
    serial: str
    ticket: str
    operator: str
    time: str
    state: str = OPEN
    used: dict[str, Any] | None = None  # the consumption record (time, luks_uuid)

    def as_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("id", "host", "device", "serial", "ticket",
                                              "operator", "time", "state")}
        if self.used is not None:
            out.update(consumed_at=self.used.get("time"), luks_uuid=self.used.get("luks_uuid"))
        return out


def records_path() -> Path:
    return state_dir() / "disk" / "wipe-permissions.jsonl"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fold(records: list[dict[str, Any]]) -> list[Permission]:
    """Every permission with its state, oldest first: consumed once used; superseded when a
    newer one for the same host and device came while it was still open; else open."""
    used = {r.get("id"): r for r in records if r.get("event") == CONSUMED}
    out: list[Permission] = []
    for r in records:
        if r.get("event") != ALLOWED:
            continue
        s = {k: str(r.get(k, "")) for k in ("id", "host", "device", "serial", "ticket",
                                              "operator", "time")}
        new = Permission(s["id"], s["host"], s["device"], s["serial"], s["ticket"],
                         s["operator"], s["time"])
        out = [dataclasses.replace(p, state=SUPERSEDED)
               if (p.host, p.device, p.state) == (new.host, new.device, OPEN) else p
               for p in out]
        out.append(dataclasses.replace(new, state=USED, used=dict(used[new.id]))
                   if new.id in used else new)
    return out


def permissions() -> list[Permission]:
    return fold(open_store().read(WIPE, strict=True))


def allow(host: str, device: str, serial: str, ticket: str, operator: str) -> Permission:
    """Record a one-time permission (the folder and file are made 0700/0600)."""
    record = {"event": ALLOWED, "id": secrets.token_hex(8), "host": host, "device": device,
              "serial": serial, "ticket": ticket, "operator": operator, "time": _now()}
    open_store().append(WIPE, [record])
    return fold([record])[0]


def open_permission(host: str, device: str) -> Permission | None:
    """The permission in force for HOST's DEVICE, if any (the latest one, still unused)."""
    found = [p for p in permissions() if (p.host, p.device, p.state) == (host, device, OPEN)]
    return found[-1] if found else None


def consume(permission: Permission, luks_uuid: str) -> None:
    """Record that the permission is used up (before the host gets the script that wipes)."""
    open_store().append(WIPE, [{"event": CONSUMED, "id": permission.id,
                                   "host": permission.host, "device": permission.device,
                                   "serial": permission.serial, "luks_uuid": luks_uuid,
                                   "time": _now()}])
