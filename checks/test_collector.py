"""R-INC/R-LOG/R-TLS/R-AUD: the collector is installed, runs, listens, answers over TLS verified
by the CA the controller pinned for it, and judges waivers with the controller's policy.  Read
here on the controller and handed to the control: the pinned CA (``ctx.inputs["collector_ca"]``)
and the SHA-256 of the policy file this audit reads (``ctx.inputs["policy_sha256"]``).  Hosts
outside group ``collector``: not applicable."""

import hashlib
from pathlib import Path

from baomi.checks.conftest import control_checks
from baomi.controls import collector as core
from baomi.controls import collector_waivers as waivers
from baomi.controls.contract import HostContext


def _policy_sha256(source: str) -> str | None:
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:  # a policy given as text ("<policy>"): its copy's content is not compared
        return None


def _inputs(ctx: HostContext) -> HostContext:
    return HostContext.of(ctx.policy, ctx.groups, ctx.host,
                          **{**ctx.inputs, core.INPUT: core.pinned_ca(ctx.host),
                             waivers.POLICY_INPUT: _policy_sha256(ctx.policy.source)})


test_check = control_checks("collector", inputs=_inputs)
