"""R-USB 外部存储设备, R-DEV 禁存个人设备 on a host: module refusal, USBGuard rules and daemon."""

from __future__ import annotations

from typing import Any, cast

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from baomi.controls import usb as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes.usb import ENABLE, RESTART, install_rules

C = core.CONTROL.name


def _seen(want: core.Desired) -> core.Observed:
    """The host as it is when the operation runs (after the operations before it)."""
    return core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)


@operation()
def usbguard_rules(want: core.Desired):  # type: ignore[no-untyped-def]
    """Install the rules only if USBGuard's own parser accepts every line (0600, root)."""
    seen = _seen(want)
    if seen.rules == want.rules and seen.modes.get(core.RULES_FILE) == "600 root":
        host.noop(f"{core.RULES_FILE} holds the policy's allow-list")
        return
    yield install_rules(want.rules)


@operation()
def usbguard_enabled(want: core.Desired):  # type: ignore[no-untyped-def]
    """Enable the unit where systemd runs; elsewhere say why nothing is managed."""
    seen = _seen(want)
    if not seen.systemd:
        host.noop("no systemd on this host: rules installed, usbguard-daemon not managed")
        return
    if seen.enabled == "enabled":
        host.noop(f"{core.SERVICE} is enabled")
        return
    yield ENABLE


@operation()
def usbguard_restart(want: core.Desired):  # type: ignore[no-untyped-def]
    """Reload the daemon after its rules or settings changed, where it can run at all."""
    seen = _seen(want)
    if not seen.systemd:
        host.noop("no systemd on this host: nothing to restart")
        return
    if not seen.usb_bus:
        # Lab hosts and containers: the daemon cannot start without the USB subsystem; the
        # unit stays enabled (a real boot with USB starts it), the apply does not fail.
        reason = ("no USB subsystem (/sys/bus/usb): usbguard-daemon cannot run here; rules "
                  "installed, unit enabled")
        host.noop(reason)
        logger.warning(f"{host.print_prefix}[{C}] {reason}")  # shown without -v
        return
    yield RESTART


def apply() -> None:
    want = core.desired(context())
    apt.packages(name=op_name(C, "usbguard package"), packages=["usbguard"])
    if want.modprobe_conf is not None:
        put_text(C, core.MODPROBE_FILE, want.modprobe_conf)
    else:
        files.file(name=op_name(C, f"{core.MODPROBE_FILE} absent"), path=core.MODPROBE_FILE,
                   present=False)
    conf = put_text(C, core.DAEMON_CONF, want.daemon_conf, mode="0600")
    rules = usbguard_rules(name=op_name(C, core.RULES_FILE), want=want)
    usbguard_enabled(name=op_name(C, f"enable {core.SERVICE}"), want=want)
    usbguard_restart(name=op_name(C, f"restart {core.SERVICE}"), want=want,
                     _if=any_changed(cast(Any, conf), rules))
