"""Helpers for control integration tests: `baomi apply` and `pytest checks` as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from baomi.lab.testing import LabHandle

ROOT = Path(__file__).resolve().parents[2]
BAOMI = [sys.executable, "-m", "baomi"]


def frozen_wheel_env(tmp: Path) -> dict[str, str]:
    """A deploy test's environment: a state dir of its own, and wheels built from a frozen
    copy of the checkout, so other people's edits during the run cannot change them."""
    from baomi.deploy.wheels import copy_sources

    copy_sources(ROOT, tmp / "src")
    return dict(os.environ, BAOMI_STATE_DIR=str(tmp / "state"),
                BAOMI_WHEEL_SOURCE=str(tmp / "src"), COLUMNS="200")


def apply(lab: LabHandle, *controls: str, limit: Iterable[str] | None = None,
          policy: Path | str | None = None, extra: Iterable[str] = (),
          timeout: float = 600) -> dict:
    """Run `baomi apply --json` on the lab; return its parsed report (fails on a bad exit).
    ``timeout`` guards against a hang (the VM's whole baseline under TCG needs more)."""
    result = apply_raw(lab, *controls, limit=limit, policy=policy, extra=extra,
                       timeout=timeout)
    assert result.returncode == 0, f"baomi apply failed ({result.returncode}):\n" \
        f"{result.stdout}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def apply_raw(lab: LabHandle, *controls: str, limit: Iterable[str] | None = None,
              policy: Path | str | None = None, extra: Iterable[str] = (),
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [*BAOMI, "apply", "-i", str(lab.inventory), "--json"]
    for control in controls:
        cmd += ["--only", control]
    for host in limit or ():
        cmd += ["--limit", host]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    cmd += list(extra)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def outcomes(report: dict, control: str) -> dict[str, str]:
    """{host: outcome} of one control in an apply report."""
    return {h: r["controls"].get(control, "—") for h, r in report["hosts"].items()}


def check(lab: LabHandle, module: str, hosts: Iterable[str],
          policy: Path | str | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one check module (e.g. "test_screen_lock") with testinfra over the lab's ssh;
    ``env``: variables added to this process's for the run (e.g. BAOMI_STATE_DIR)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header",
           "-o", "addopts=", f"checks/{module}.py", f"--hosts={','.join(hosts)}",
           f"--ssh-config={lab.ssh_config}", f"--inventory={lab.inventory}"]
    if policy is not None:
        cmd.append(f"--policy={policy}")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env} if env else None)
