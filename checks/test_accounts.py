"""R-PRV 权限审批: every personal account on the host is covered by a recorded request.

The requests are the controller's records (``baomi account request``), read here on the
controller and handed to the control as ``ctx.inputs["account_requests"]``.
"""

import pytest

from baomi.checks.conftest import control_checks
from baomi.controls import accounts as core
from baomi.controls.contract import HostContext
from baomi.records import RecordError


def _requests(ctx: HostContext) -> HostContext:
    try:
        requests = core.load_requests()
    except RecordError as exc:
        pytest.exit(str(exc), returncode=2)
    return HostContext.of(ctx.policy, ctx.groups, ctx.host, **{**ctx.inputs, core.INPUT: requests})


test_check = control_checks("accounts", inputs=_requests)
