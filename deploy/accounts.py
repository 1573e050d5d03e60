"""R-PRV 权限审批: create only the accounts that a recorded, approved request covers.

Run by ``baomi account apply -i INVENTORY`` (baomi/controller/commands/accounts.py); reads
the controller's requests (``$BAOMI_STATE_DIR/accounts/requests.jsonl``).  An account without a
request is never created here; the check (checks/test_accounts.py) lists those that exist
anyway.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from baomi.controls import accounts as core
from baomi.deploy.common import context, nothing_to_do, op_name, shell_if
from baomi.records import RecordError

C = core.CONTROL.name


def apply() -> None:
    try:
        requests = core.load_requests()
    except RecordError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    want = core.desired(context(**{core.INPUT: requests}))
    if not want.create:
        nothing_to_do(name=op_name(C, "no approved account request for this host"),
                   reason="no approved account request covers this host")
    for r in want.create:
        u = shlex.quote(r.user)
        # GECOS may not hold ':' (or ',' which separates its fields).
        comment = "baomi R-PRV " + "".join(c for c in r.ticket if c not in ":,\n")
        shell_if(name=op_name(C, f"account {r.user} (requested by {r.requester}, approved by "
                                 f"{r.approver})"),
                 check=f"getent passwd {u} >/dev/null",
                 command=f"useradd -m -s /bin/bash -c {shlex.quote(comment.strip())} {u}",
                 reason=f"{r.user} exists")


# `baomi account apply` runs this file on its own (it is not in the baseline yet).
if os.environ.get("BAOMI_ACCOUNTS_DEPLOY") == "1":
    apply()
