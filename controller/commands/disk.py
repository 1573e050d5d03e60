"""`baomi disk`: one-time permissions to wipe one disk before disk_encryption formats it.

    baomi disk allow-wipe HOST DEVICE --serial S --ticket T [--operator NAME] [--json]
    baomi disk permissions [--json]          every permission: open / consumed / superseded

A device that is not blank (a filesystem, a partition table, data that looks random or
patterned) is formatted only under such a permission, on that host, for that device, when the
disk there has the serial (or WWN) S, and once (baomi/controller/wipe.py).  A LUKS header is
never wiped, with or without one.
"""

from __future__ import annotations

import getpass
import os
import re

import click

from baomi.controller import wipe
from baomi.records import RecordError
from baomi.ui import json_option, print_json

HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
DEVICE = re.compile(r"/dev/[A-Za-z0-9_.:+@/=-]{1,240}")
SERIAL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")


def _checked(value: str, pattern: re.Pattern[str], what: str, hint: str) -> str:
    if not pattern.fullmatch(value) or "/../" in value + "/":
        raise click.BadParameter(f"{value!r} is not {what} ({hint})")
    return value


@click.group()
def disk() -> None:
    """R-ENC: one-time permissions to wipe one disk (host + device + serial + ticket)."""


@disk.command("allow-wipe")
@click.argument("host")
@click.argument("device")
@click.option("--serial", required=True,
              help="The disk's serial or WWN, as `lsblk -dn -o SERIAL,WWN DEVICE` shows it on "
                   "the host.")
@click.option("--ticket", required=True, help="The change ticket that authorises the wipe.")
@click.option("--operator", default=None, help="Who allows it (default: $SUDO_USER or you).")
@json_option
def allow_wipe(host: str, device: str, serial: str, ticket: str, operator: str | None,
               as_json: bool) -> None:
    """Allow the next apply to wipe DEVICE on HOST once, if its serial is --serial."""
    _checked(host, HOST, "a host name", "as the inventory names it")
    _checked(device, DEVICE, "a device path", "as the policy's volume names it, /dev/...")
    _checked(serial, SERIAL, "a serial", "printable, no leading or trailing space")
    if not ticket.strip() or not ticket.isprintable():
        raise click.BadParameter("give the change ticket (printable text)",
                                 param_hint="--ticket")
    who = operator or os.environ.get("SUDO_USER") or getpass.getuser()
    try:
        permission = wipe.allow(host, device, serial, ticket.strip(), who)
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(permission.as_json())
        return
    click.echo(f"allowed once: wipe {device} on {host} if its serial is {serial} "
               f"(ticket {permission.ticket}, permission {permission.id}, recorded in "
               f"{wipe.records_path()}); never a LUKS header, never a device in use")


@disk.command("permissions")
@json_option
def list_permissions(as_json: bool) -> None:
    """Every wipe permission: open, consumed (with the LUKS UUID it made) or superseded."""
    try:
        found = wipe.permissions()
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"records": str(wipe.records_path()),
                    "permissions": [p.as_json() for p in found]})
        return
    if not found:
        click.echo(f"{wipe.records_path()}: no wipe permissions")
    for p in found:
        used = f" → LUKS {p.used.get('luks_uuid')} at {p.used.get('time')}" if p.used else ""
        click.echo(f"{p.time}  {p.state:<10} {p.host:<16} {p.device}  serial {p.serial}  "
                   f"ticket {p.ticket}  by {p.operator}{used}")
