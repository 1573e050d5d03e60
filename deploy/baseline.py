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

from deploy.common import ALL_CONTROLS, policy, selected

policy()  # a bad policy stops here, before any operation is added
for control in ALL_CONTROLS:
    if selected(control):
        module = importlib.import_module(f"deploy.{control}")
        module.apply()
