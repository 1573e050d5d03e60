"""`baomi apply` killed (a timeout, kill -9): its pyinfra child does not keep working on hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = """
import subprocess, sys, time
from baomi.controller.runner import _die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         preexec_fn=_die_with_parent)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_the_child_dies_with_the_command(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # A zombie whose parent is gone is reaped by init; /proc shows its state meanwhile.
        state = Path(f"/proc/{child}/stat").read_text().split(") ")[-1][:1] \
            if Path(f"/proc/{child}/stat").exists() else "X"
        if state in ("Z", "X"):
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError(f"pyinfra's stand-in (pid {child}) outlived the killed command")
