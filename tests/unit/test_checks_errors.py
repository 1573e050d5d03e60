"""The checks stop with a clear line (exit 2) on a bad inventory, before any host is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_inventory_is_a_clear_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
         "checks/test_ssh.py", "--hosts=ssh://unused-host", f"--inventory={missing}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{missing}: no such inventory file" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
