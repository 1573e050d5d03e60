"""R-SEC 防火墙 on a host: nftables default-deny inbound, loaded atomically, never cutting SSH."""

from __future__ import annotations

import base64
import shlex

from pyinfra import host
from pyinfra.api import OperationError, operation

from baomi.controls import firewall as core
from baomi.deploy.common import Observation, groups, op_name, policy

C = core.CONTROL


def load_script(conf: str) -> str:
    """Install the ruleset file only if `nft -c` accepts it, then load it in one transaction."""
    q = shlex.quote(core.CONF)
    new = shlex.quote(core.CONF + ".baomi-new")
    data = base64.b64encode(conf.encode()).decode()
    return (
        f"set -e; printf %s {data} | base64 -d > {new}; chmod 0755 {new}; "
        f"if ! err=$(nft -c -f {new} 2>&1); then rm -f {new}; "
        f"  echo \"nft -c rejected the ruleset: $err\" >&2; exit 1; fi; "
        f"mv -f {new} {q}; nft -f {q}"
    )


@operation()
def ruleset(want: core.Desired):  # type: ignore[no-untyped-def]
    """Write /etc/nftables.conf and load it when the file or the loaded table differ."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if not core.ruleset_findings(want, seen) and not core.conf_findings(want, seen):
        host.noop(f"table {core.FAMILY} {core.TABLE} holds the policy's rules")
        return
    risk = core.lockout_risk(want, seen)
    if risk:
        raise OperationError(f"not loading the firewall: {risk}; fix the policy or sshd first")
    yield load_script(want.conf)


@operation()
def boot_service(want: core.Desired):  # type: ignore[no-untyped-def]
    """Enable nftables.service where systemd runs, so the ruleset is loaded at boot."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script()))
    if not core.service_findings(want, seen):
        host.noop(f"{core.SERVICE}: {seen.service or 'not applicable'}")
        return
    yield f"systemctl enable {core.SERVICE}"


def apply() -> None:
    want = core.desired(policy(), groups())
    if not want.enabled:
        return
    ruleset(name=op_name(C, f"{core.CONF} (nft -c, nft -f)"), want=want)
    boot_service(name=op_name(C, f"enable {core.SERVICE}"), want=want)
