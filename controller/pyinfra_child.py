"""``python -m baomi.controller.pyinfra_child ARGS``: pyinfra's command line, plus who failed.

pyinfra's ``--json`` document names the failed hosts only after an execution; after a
``--dry`` run, or when pyinfra stops before any result (no host reachable), it does not, though
pyinfra knows (its exit status 1 says so).  When this child exits it writes pyinfra's own set
of failed hosts, as JSON, to the file named by ``$BAOMI_PYINFRA_HOSTS`` (if set), so the
runner decides failures from pyinfra's state, not from the words a host prints.
"""

from __future__ import annotations

import atexit
import json
import os

from pyinfra import state
from pyinfra.context import ctx_state
from pyinfra_cli.main import main  # type: ignore[import-untyped]


def report(path: str) -> None:
    """Write {"failed_hosts": [...]} (null when pyinfra stopped before it had any hosts)."""
    started = ctx_state.isset()  # type: ignore[no-untyped-call]
    failed = sorted(h.name for h in state.failed_hosts) if started else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"failed_hosts": failed}, out)


if __name__ == "__main__":
    target = os.environ.pop("BAOMI_PYINFRA_HOSTS", "")
    if target:
        atexit.register(report, target)
    main()
