"""Run a deploy of ``baomi.deploy`` through pyinfra and report host × control (`baomi apply`).

pyinfra runs as a child process (``python -m pyinfra --json``): its machine-readable plan and
results give, per operation, which hosts changed, failed or stayed as they were; every
operation name starts with ``[control]``, which turns them into a host × control table.
This module imports no pyinfra itself, so the front door stays light.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The deploy files, as installed: baomi/deploy beside this room (a link to deploy/ in a checkout).
DEPLOYS = Path(__file__).resolve().parents[1] / "deploy"
BASELINE = DEPLOYS / "baseline.py"
_OP = re.compile(r"^\[(?P<control>[a-z_]+)\] ")
_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+(?P<text>.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class HostResult:
    controls: dict[str, str] = field(default_factory=dict)  # control → changed/unchanged/...
    error: str = ""


@dataclass
class ApplyResult:
    hosts: dict[str, HostResult]
    dry: bool
    seconds: float
    exit_code: int
    payload: dict[str, Any] = field(default_factory=dict)  # pyinfra's --json output, as is

    @property
    def failed(self) -> list[str]:
        return sorted(h for h, r in self.hosts.items()
                      if r.error or "failed" in r.controls.values())

    def as_dict(self) -> dict[str, Any]:
        return {"dry": self.dry, "seconds": round(self.seconds, 2), "failed_hosts": self.failed,
                "hosts": {h: {"controls": r.controls, "error": r.error or None}
                          for h, r in sorted(self.hosts.items())}}


def pyinfra_command(inventory: str, *, dry: bool, diff: bool, limit: list[str],
                    deploy_file: Path = BASELINE) -> list[str]:
    # Without -y pyinfra detects changes first (the plan); with --dry it stops there.
    cmd = [sys.executable, "-m", "pyinfra", "--json", inventory, str(deploy_file)]
    cmd.append("--dry" if dry else "-y")
    if diff:
        cmd.append("--diff")
    for item in limit:
        cmd += ["--limit", item]
    return cmd


def summarise(payload: dict[str, Any], errors: dict[str, str], dry: bool,
              known_hosts: list[str]) -> dict[str, HostResult]:
    """pyinfra's JSON plan/results + per-host error lines → host × control outcome."""
    hosts: dict[str, HostResult] = defaultdict(HostResult)
    for name in known_hosts:
        hosts[name]
    rank = {"unchanged": 0, "would change": 1, "changed": 1, "failed": 2}

    def mark(host: str, control: str, outcome: str) -> None:
        current = hosts[host].controls.get(control)
        if current is None or rank[outcome] > rank[current]:
            hosts[host].controls[control] = outcome

    if dry:
        for op in payload.get("plan") or []:
            match = _OP.match(op.get("name", ""))
            if not match:
                continue
            for host in op.get("hosts_with_change", []) + op.get(
                    "hosts_with_conditional_change", []):
                mark(host, match["control"], "would change")
        controls = {m["control"] for op in payload.get("plan") or []
                    if (m := _OP.match(op.get("name", "")))}
        for name, result in hosts.items():
            if name not in errors:
                for control in controls:
                    result.controls.setdefault(control, "unchanged")
    else:
        results = payload.get("results") or {}
        for op in results.get("operations", []):
            match = _OP.match(op.get("name", ""))
            if not match:
                continue
            for host in op.get("no_change", []):
                mark(host, match["control"], "unchanged")
            for host in op.get("success", []):
                mark(host, match["control"], "changed")
            for host in op.get("error", []):
                mark(host, match["control"], "failed")
        for host in results.get("failed_hosts", []):
            hosts[host].error = hosts[host].error or errors.get(host, "failed")
    for host, message in errors.items():
        if host in hosts and (not hosts[host].controls
                              or "failed" in hosts[host].controls.values()):
            hosts[host].error = message
    return dict(hosts)


def run(inventory: str, policy_path: str, *, dry: bool = False, diff: bool = False,
        limit: list[str] | None = None, only: list[str] | None = None,
        known_hosts: list[str] | None = None, progress: Any = None,
        deploy_file: Path = BASELINE, extra_env: dict[str, str] | None = None) -> ApplyResult:
    """Run a deploy file (default: the baseline) through pyinfra.

    ``progress(text)`` is called with each stage/host line as it comes; ``extra_env`` passes
    parameters to the deploy file (e.g. which user to offboard).
    """
    env = dict(os.environ, BAOMI_POLICY=str(Path(policy_path).resolve()),
               BAOMI_ONLY=",".join(only or []), PYINFRA_PROGRESS="off", **(extra_env or {}))
    started = time.monotonic()
    proc = subprocess.Popen(pyinfra_command(inventory, dry=dry, diff=diff, limit=limit or [],
                                            deploy_file=deploy_file),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    errors: dict[str, str] = {}
    assert proc.stderr is not None and proc.stdout is not None
    stderr_tail: list[str] = []
    # stdout is one JSON document printed at the end; stderr streams progress meanwhile.
    for raw in proc.stderr:
        line = _ANSI.sub("", raw.rstrip("\n"))
        stderr_tail = ([*stderr_tail, line])[-40:]
        match = _HOST_LINE.match(line)
        if match and _is_error(match["text"]):
            errors.setdefault(match["host"], match["text"].strip())
        if progress is not None and line.strip():
            progress(line)
    stdout = proc.stdout.read()
    code = proc.wait()
    seconds = time.monotonic() - started
    try:
        payload = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        payload = {}
    if not payload:
        reason = next((ln for ln in reversed(stderr_tail) if ln.strip()), f"exit {code}")
        hosts = {h: HostResult(error=errors.get(h, reason)) for h in (known_hosts or [])}
        return ApplyResult(hosts, dry, seconds, code or 1)
    hosts = summarise(payload, errors, dry, known_hosts or [])
    result = ApplyResult(hosts, dry, seconds, 0, payload)
    result.exit_code = 1 if result.failed or code not in (0,) else 0
    return result


def _is_error(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("error", "could not connect", "failed",
                                            "unable to", "refused", "timed out",
                                            "host key verification"))
