"""The baseline: every control of the policy on every host (pyinfra runs this file per host).

    baomi apply -i INVENTORY            (validates the policy first, reports host × control)
    pyinfra INVENTORY deploy/baseline.py   (reads $BAOMI_POLICY or ./policy.yaml)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# `pyinfra INVENTORY deploy/baseline.py` from a checkout without an installed baomi.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinfra import host

from baomi.deploy.common import ALL_CONTROLS, policy, selected

policy()  # a bad policy stops here, before any operation is added
# pyinfra identifies an operation by the line numbers of its call stack, not the file names:
# two controls calling operations at the same lines would be taken for one operation and
# could order the DAG in a cycle.  host.loop adds the control's position to every identity.
for control in host.loop(ALL_CONTROLS):  # type: ignore[no-untyped-call]
    if selected(control):
        module = importlib.import_module(f"baomi.deploy.{control}")
        module.apply()
