"""R-OFF 离职帐号冻结与注销, R-RET 清退客户资料: every user this host's records say is frozen is
shut out, and deleted (its UID kept retired) once due.

Offboarding is a procedure, not a registry control: :func:`baomi.offboarding.run` reads every
recorded user once per host; each of its checks is a test, like a control's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from baomi import offboarding as core
from baomi.checks.conftest import host_checks, observe
from baomi.controls.contract import HostContext, Result


def read(host: Any, context: HostContext) -> Result:
    return core.run(lambda script: observe(host, script), context.host,
                    datetime.now(UTC).date())


test_check = host_checks(core.NAME, core.CHECKS, read)
