"""R-SEC 防火墙 on a host: nftables default-deny inbound, loaded atomically, never cutting SSH."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controls import firewall as core
from baomi.deploy.common import Observation, context, op_name
from baomi.fixes.firewall import ENABLE_BOOT_SERVICE, load_script

C = core.CONTROL.name
# What a reload of the ruleset file mends.
RULESET_CHECKS = {core.LOADED.id, core.OPEN_PORTS.id, core.RULES.id, core.CONF_FILE.id}


def _failing(want: core.Desired) -> tuple[core.Observed, set[str]]:
    """The host as it is when the operation runs, and the IDs of the checks it fails."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)
    return seen, {f.check for f in core.compare(want, seen)}


@operation()
def ruleset(want: core.Desired):  # type: ignore[no-untyped-def]
    """Write /etc/nftables.conf and load it when the file or the loaded table differ."""
    seen, failing = _failing(want)
    if not failing & RULESET_CHECKS:
        host.noop(f"table {core.FAMILY} {core.TABLE} holds the policy's rules")
        return
    risk = core.lockout_risk(want, seen)
    if risk:
        raise OperationError(f"not loading the firewall: {risk}; fix the policy or sshd first")
    yield load_script(want.conf)


@operation()
def boot_service(want: core.Desired):  # type: ignore[no-untyped-def]
    """Enable nftables.service where systemd runs, so the ruleset is loaded at boot."""
    seen, failing = _failing(want)
    if core.BOOT_SERVICE.id not in failing:
        host.noop(f"{core.SERVICE}: {seen.service or 'not applicable'}")
        return
    yield ENABLE_BOOT_SERVICE


def apply() -> None:
    want = core.desired(context())
    if core.not_applicable(want):
        return
    ruleset(name=op_name(C, f"{core.CONF} (nft -c, nft -f)"), want=want)
    boot_service(name=op_name(C, f"enable {core.SERVICE}"), want=want)
