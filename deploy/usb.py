"""R-USB 外部存储设备, R-DEV 禁存个人设备 on a host: module refusal, USBGuard rules and daemon."""

from __future__ import annotations

import shlex
from typing import Any, cast

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from baomi.controls import usb as core
from baomi.deploy.common import Observation, groups, install_file_script, op_name, policy, put_text

C = core.CONTROL


@operation()
def usbguard_rules(path: str, content: str):  # type: ignore[no-untyped-def]
    """Install the rules only if USBGuard's own parser accepts every line (0600, root)."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if seen.rules == content and seen.modes.get(path) == "600 root":
        host.noop(f"{path} holds the policy's allow-list")
        return
    new = shlex.quote(f"{path}.baomi-check")
    yield (install_file_script(f"{path}.baomi-check", content, "0600")
           + f" && if usbguard-rule-parser -f {new} 2>&1 | grep -q '^ERROR'; then "
           f"rm -f {new}; echo 'usbguard-rule-parser rejected the generated rules' >&2; "
           f"exit 1; fi && mv -f {new} {shlex.quote(path)}")


@operation()
def usbguard_enabled():  # type: ignore[no-untyped-def]
    """Enable the unit where systemd runs; elsewhere say why nothing is managed."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if not seen.systemd:
        host.noop("no systemd on this host: rules installed, usbguard-daemon not managed")
        return
    if seen.enabled == "enabled":
        host.noop(f"{core.SERVICE} is enabled")
        return
    yield f"systemctl enable {core.SERVICE}"


@operation()
def usbguard_restart():  # type: ignore[no-untyped-def]
    """Reload the daemon after its rules or settings changed, where it can run at all."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
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
    yield f"systemctl restart {core.SERVICE}"


def apply() -> None:
    want = core.desired(policy(), groups())
    apt.packages(name=op_name(C, "usbguard package"), packages=["usbguard"])
    if want.modprobe_conf is not None:
        put_text(C, core.MODPROBE_FILE, want.modprobe_conf)
    else:
        files.file(name=op_name(C, f"{core.MODPROBE_FILE} absent"), path=core.MODPROBE_FILE,
                   present=False)
    conf = put_text(C, core.DAEMON_CONF, want.daemon_conf, mode="0600")
    rules = usbguard_rules(name=op_name(C, core.RULES_FILE), path=core.RULES_FILE,
                           content=want.rules)
    usbguard_enabled(name=op_name(C, f"enable {core.SERVICE}"))
    usbguard_restart(name=op_name(C, f"restart {core.SERVICE}"),
                     _if=any_changed(cast(Any, conf), rules))
