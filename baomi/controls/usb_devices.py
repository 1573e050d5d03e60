"""USB devices as USBGuard reports them (``usbguard list-devices``, its FileAudit log), judged
by the policy's allow-list (:func:`baomi.controls.usb.decide`): the agent's and the audit-only
rollout's evidence of what was (or would have been) blocked.  Read-only, pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from baomi.controls.usb import Decision, decide
from baomi.policy import Policy

_AUDIT_RULE = re.compile(r"device\.rule='(?P<rule>[^']*)'")
_ID = re.compile(r"\bid (?P<v>[0-9a-f]{4}):(?P<p>[0-9a-f]{4})\b")
_SERIAL = re.compile(r'\bserial "(?P<s>[^"]*)"')
_NAME = re.compile(r'\bname "(?P<n>[^"]*)"')
_IFACES = re.compile(r"with-interface (?:\{ (?P<many>[^}]*) \}|(?P<one>[0-9a-f:]{8}))")


@dataclass(frozen=True)
class SeenDevice:
    """A device as USBGuard describes it (``usbguard list-devices`` or the audit file)."""

    target: str
    vendor: str
    product: str
    serial: str | None
    name: str
    interfaces: tuple[str, ...]


def parse_device_rule(text: str) -> SeenDevice | None:
    """``allow id 0781:5567 serial "…" name "…" … with-interface 08:06:50 …`` → device."""
    ident = _ID.search(text)
    if not ident:
        return None
    serial = _SERIAL.search(text)
    name = _NAME.search(text)
    ifaces = _IFACES.search(text)
    interfaces: tuple[str, ...] = ()
    if ifaces:
        interfaces = tuple((ifaces["many"] or ifaces["one"] or "").split())
    return SeenDevice(text.split(" ", 1)[0].split(":")[-1].strip(), ident["v"], ident["p"],
                      serial["s"] if serial else None, name["n"] if name else "", interfaces)


def list_devices(output: str) -> list[SeenDevice]:
    """``usbguard list-devices`` lines ``N: allow id … with-interface …``."""
    out = []
    for line in output.splitlines():
        if re.match(r"^\d+: (allow|block|reject) ", line):
            dev = parse_device_rule(line.split(": ", 1)[1])
            if dev:
                out.append(dev)
    return out


def audited_devices(audit_log: str) -> list[SeenDevice]:
    """Devices the daemon decided on, from its FileAudit log (Device.Insert/Present lines)."""
    out = []
    for line in audit_log.splitlines():
        if "type='Device.Insert'" in line or "type='Device.Present'" in line:
            m = _AUDIT_RULE.search(line)
            dev = parse_device_rule(m["rule"]) if m else None
            if dev and dev not in out:
                out.append(dev)
    return out


def would_block(policy: Policy, devices: list[SeenDevice]) -> list[tuple[SeenDevice, Decision]]:
    """The devices the policy blocks (or, in audit-only mode, would block), with the rule."""
    found = []
    for dev in devices:
        d = decide(policy, dev.vendor, dev.product, dev.serial, dev.interfaces)
        if d.would_block:
            found.append((dev, d))
    return found
