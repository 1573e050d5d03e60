"""Run a deploy of ``baomi.deploy`` through pyinfra and report host × control (`baomi apply`).

pyinfra runs as a child process (``python -m baomi.controller.pyinfra_child --json``, pyinfra's
own command line): its machine-readable plan and results give, per operation, which hosts
changed, failed or stayed as they were (read by :mod:`baomi.controller.pyinfra_result`); every
operation name starts with ``[control]``, which turns them into a host × control table.
This module imports no pyinfra itself, so the front door stays light.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baomi.controller.pyinfra_result import (
    CHANGED,
    FAILED,
    UNCHANGED,
    WOULD_CHANGE,
    OpResult,
    PyinfraOutputError,
    failed_hosts,
    host_messages,
    operations,
    read_payload,
)

# The deploy files, as installed: baomi/deploy beside this room (a link to deploy/ in a checkout).
DEPLOYS = Path(__file__).resolve().parents[1] / "deploy"
BASELINE = DEPLOYS / "baseline.py"
_OP = re.compile(r"^\[(?P<control>[a-z_]+)\] ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RANK = {UNCHANGED: 0, WOULD_CHANGE: 1, CHANGED: 1, FAILED: 2}

__all__ = ["ApplyResult", "HostResult", "PyinfraOutputError", "interpret", "run"]


@dataclass
class HostResult:
    controls: dict[str, str] = field(default_factory=dict)  # control → changed/unchanged/...
    failed: bool = False  # pyinfra failed this host (from its result and state, never its text)
    error: str = ""  # what pyinfra printed about the failure, for people


@dataclass
class ApplyResult:
    hosts: dict[str, HostResult]
    dry: bool
    seconds: float
    exit_code: int
    operations: dict[str, list[OpResult]] = field(default_factory=dict)  # host → its operations

    @property
    def failed(self) -> list[str]:
        return sorted(h for h, r in self.hosts.items() if r.failed)

    def as_dict(self) -> dict[str, Any]:
        return {"dry": self.dry, "seconds": round(self.seconds, 2), "failed_hosts": self.failed,
                "hosts": {h: {"controls": r.controls, "error": r.error or None}
                          for h, r in sorted(self.hosts.items())}}


def pyinfra_command(inventory: str, *, dry: bool, diff: bool, limit: list[str],
                    deploy_file: Path = BASELINE) -> list[str]:
    # Without -y pyinfra detects changes first (the plan); with --dry it stops there.
    # Host keys are always checked strictly: pyinfra's default ("accept-new") would trust
    # whatever answers first for a host an inventory does not pin; --data overrides every
    # host's value, so no inventory can turn it off either.
    cmd = [sys.executable, "-m", "baomi.controller.pyinfra_child", "--json",
           "--data", "ssh_strict_host_key_checking=yes", inventory, str(deploy_file)]
    cmd.append("--dry" if dry else "-y")
    if diff:
        cmd.append("--diff")
    for item in limit:
        cmd += ["--limit", item]
    return cmd


def summarise(payload: dict[str, Any], *, dry: bool, failed: set[str], errors: dict[str, str],
              known_hosts: list[str]) -> tuple[dict[str, HostResult], dict[str, list[OpResult]]]:
    """pyinfra's document + who failed → host × control outcome (and each host's operations)."""
    per_host = operations(payload, dry=dry, errors=errors)
    hosts = {name: HostResult() for name in [*known_hosts, *per_host, *sorted(failed)]}
    for host, ops in per_host.items():
        for op in ops:
            match = _OP.match(op.name)
            current = match and hosts[host].controls.get(match["control"])
            if match and (current is None or _RANK[op.outcome] > _RANK[current]):
                hosts[host].controls[match["control"]] = op.outcome
    if dry:
        # The plan lists every operation but only the hosts each would change.
        controls = {m["control"] for op in payload["plan"] if (m := _OP.match(op["name"]))}
        for name, result in hosts.items():
            if name not in failed:
                for control in controls:
                    result.controls.setdefault(control, UNCHANGED)
    for host in failed:
        hosts[host].failed = True
        hosts[host].error = errors.get(host, "failed")
    return hosts, per_host


def interpret(stdout: str, stderr: list[str], code: int, pyinfra_failed: set[str] | None, *,
              dry: bool, known_hosts: list[str], seconds: float = 0.0) -> ApplyResult:
    """What a finished pyinfra run means, from its stdout, stderr lines, exit status and its own
    failed hosts (None when pyinfra said nothing).  Raises :class:`PyinfraOutputError` when
    the output is not a result."""
    last = next((ln.strip() for ln in reversed(stderr) if ln.strip()), f"exit status {code}")
    said = pyinfra_failed or set()
    if not stdout.strip():
        if code == 0:
            raise PyinfraOutputError(f"pyinfra exited 0 without its --json result ({last})")
        # pyinfra stopped before any result (an operation refused, no host reachable, the
        # deploy failed to load): every host failed; its own line where pyinfra failed it.
        own = host_messages(stderr, said)
        hosts = {h: HostResult(failed=True, error=(own.get(h) or [last])[0])
                 for h in [*known_hosts, *sorted(said - set(known_hosts))]}
        return ApplyResult(hosts, dry, seconds, 1)
    payload = read_payload(stdout, dry=dry)
    failed = failed_hosts(payload) | said
    messages = host_messages(stderr, set(known_hosts) | failed)
    errors = {h: (messages.get(h) or ["failed"])[0] for h in failed}
    if code != 0 and not failed:
        # pyinfra reports a failure it does not attribute: no host can be called fine.
        failed = set(known_hosts)
        errors = dict.fromkeys(failed, f"pyinfra exited {code}: {last}")
    hosts, per_host = summarise(payload, dry=dry, failed=failed, errors=errors,
                                known_hosts=known_hosts)
    return ApplyResult(hosts, dry, seconds, 1 if failed or code else 0, per_host)


def run(inventory: str, policy_path: str, *, dry: bool = False, diff: bool = False,
        limit: list[str] | None = None, only: list[str] | None = None,
        known_hosts: list[str] | None = None, progress: Callable[[str], None] | None = None,
        deploy_file: Path = BASELINE, extra_env: dict[str, str] | None = None) -> ApplyResult:
    """Run a deploy file (default: the baseline) through pyinfra.

    ``progress(text)`` is called with each stage/host line as it comes; ``extra_env`` passes
    parameters to the deploy file (e.g. which user to offboard).  Raises
    :class:`PyinfraOutputError` when pyinfra's output is not a result.
    """
    with tempfile.TemporaryDirectory(prefix="baomi-pyinfra-") as folder:
        report = Path(folder) / "failed-hosts.json"
        env = dict(os.environ, BAOMI_POLICY=str(Path(policy_path).resolve()),
                   BAOMI_ONLY=",".join(only or []), PYINFRA_PROGRESS="off",
                   BAOMI_PYINFRA_HOSTS=str(report), **(extra_env or {}))
        started = time.monotonic()
        proc = subprocess.Popen(pyinfra_command(inventory, dry=dry, diff=diff,
                                                limit=limit or [], deploy_file=deploy_file),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, preexec_fn=_die_with_parent)
        assert proc.stderr is not None and proc.stdout is not None  # noqa: S101 type narrowing
        stderr: list[str] = []
        # stdout is one JSON document printed at the end; stderr streams progress meanwhile.
        # Both are drained at once: a large document (a big fleet) written while stderr is
        # still open would otherwise fill the pipe and stop both processes.
        out: list[str] = []
        document = proc.stdout
        reader = threading.Thread(target=lambda: out.append(document.read()), daemon=True)
        reader.start()
        for raw in proc.stderr:
            line = _ANSI.sub("", raw.rstrip("\n"))
            stderr.append(line)
            if progress is not None and line.strip():
                progress(line)
        code = proc.wait()
        reader.join()
        stdout = "".join(out)
        said = _read_report(report)
    return interpret(stdout, stderr, code, said, dry=dry, known_hosts=known_hosts or [],
                     seconds=time.monotonic() - started)


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGTERM when `baomi` dies, so a killed or timed-out
    command never leaves pyinfra working on hosts behind its back (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read_report(path: Path) -> set[str] | None:
    """pyinfra_child's failed hosts; None when it wrote none (pyinfra stopped before hosts)."""
    try:
        hosts = json.loads(path.read_text(encoding="utf-8"))["failed_hosts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {h for h in hosts if isinstance(h, str)} if isinstance(hosts, list) else None
