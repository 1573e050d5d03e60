"""R-INC/R-LOG/R-TLS: the collector is installed, runs, listens, and answers over TLS verified by
the CA the controller pinned for it (read here on the controller, handed to the control as
``ctx.inputs["collector_ca"]``).  Hosts outside group ``collector``: not applicable."""

from baomi.checks.conftest import control_checks
from baomi.controls import collector as core
from baomi.controls.contract import HostContext


def _pinned_ca(ctx: HostContext) -> HostContext:
    return HostContext.of(ctx.policy, ctx.groups, ctx.host,
                          **{**ctx.inputs, core.INPUT: core.pinned_ca(ctx.host)})


test_check = control_checks("collector", inputs=_pinned_ca)
