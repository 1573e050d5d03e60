"""The one reader of what a pyinfra run reports: its ``--json`` document and its exit status.

Who failed is decided from structure only: the ``results`` of the JSON document (per operation
``success`` / ``no_change`` / ``error`` host lists, and ``failed_hosts``), pyinfra's own set of
failed hosts (``pyinfra_child`` writes it, because a ``--dry`` document has no results) and the
exit status.  pyinfra's log lines on stderr only give the *text* shown for a host that failed;
a host cannot make itself or another host look failed or fine by what it prints.

A document that is not pyinfra's (bad JSON, wrong shape, none after a clean exit) raises
:class:`PyinfraOutputError`: nothing can be said about the hosts then, and the command stops
with one line (exit 2) rather than report anything as unchanged.  A run that stopped before
its document with a failure status (an operation refused, no host reachable) is a result: every
host failed (:func:`baomi.controller.runner.interpret`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click

# Outcomes of one operation on one host.
CHANGED, UNCHANGED, FAILED, WOULD_CHANGE = "changed", "unchanged", "failed", "would change"
_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+(?P<text>.*)$")
# pyinfra's per-host status lines: progress, never the reason of a failure.
STATUS = ("Success", "No changes", "Skipped", "Connected", "Ready:")


class PyinfraOutputError(click.ClickException):
    """pyinfra's output is not a result this reader understands; the message says why.

    A click error with exit status 2: the command ends with that one line, whatever it ran."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; nothing is known about the hosts of this run")


@dataclass(frozen=True)
class OpResult:
    """One operation on one host: pyinfra's name for it and what it did there."""

    op_hash: str
    name: str
    outcome: str  # CHANGED, UNCHANGED, FAILED or WOULD_CHANGE
    error: str = ""  # for FAILED: what pyinfra printed for the host


def _host_lists(op: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, list[str]]:
    lists = {}
    for key in keys:
        value = op.get(key, [])
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            raise PyinfraOutputError(f"{where}: {key!r} is not a list of host names")
        lists[key] = value
    return lists


def read_payload(stdout: str, *, dry: bool) -> dict[str, Any]:
    """pyinfra's ``--json`` document, checked for the fields this reader uses."""
    try:
        payload = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise PyinfraOutputError(f"pyinfra's --json output is not JSON ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("plan"), list):
        raise PyinfraOutputError("pyinfra's --json output has no 'plan' list")
    for number, op in enumerate(payload["plan"], 1):
        if not isinstance(op, dict) or not isinstance(op.get("op_hash"), str) \
                or not isinstance(op.get("name"), str):
            raise PyinfraOutputError(f"pyinfra's plan, operation {number}: no op_hash/name")
        _host_lists(op, ("hosts_with_change", "hosts_with_conditional_change"),
                    f"pyinfra's plan, operation {number}")
    results = payload.get("results")
    if dry:
        return payload
    if not isinstance(results, dict) or not isinstance(results.get("operations"), list):
        raise PyinfraOutputError("pyinfra ran without --dry but its --json output has no "
                                 "'results' with 'operations'")
    _host_lists(results, ("failed_hosts",), "pyinfra's results")
    for number, op in enumerate(results["operations"], 1):
        if not isinstance(op, dict) or not isinstance(op.get("op_hash"), str) \
                or not isinstance(op.get("name"), str):
            raise PyinfraOutputError(f"pyinfra's results, operation {number}: no op_hash/name")
        _host_lists(op, ("success", "no_change", "error"), f"pyinfra's results, operation {number}")
    return payload


def failed_hosts(payload: dict[str, Any]) -> set[str]:
    """Hosts the document's results name as failed (none in a dry run's document)."""
    results = payload.get("results") or {}
    failed = set(results.get("failed_hosts", []))
    for op in results.get("operations", []):
        failed.update(op.get("error", []))
    return failed


def host_messages(stderr: Iterable[str], hosts: Iterable[str]) -> dict[str, list[str]]:
    """What pyinfra printed about each of HOSTS (``[host] text`` lines, status lines left out).

    Text to show with a failure, never evidence of one: hosts print into these lines."""
    wanted = set(hosts)
    found: dict[str, list[str]] = {}
    for line in stderr:
        match = _HOST_LINE.match(line)
        if match and match["host"] in wanted and match["text"].strip() \
                and not match["text"].startswith(STATUS):
            found.setdefault(match["host"], []).append(match["text"].strip())
    return found


def operations(payload: dict[str, Any], *, dry: bool,
               errors: dict[str, str] | None = None) -> dict[str, list[OpResult]]:
    """{host: [OpResult, ...]} in pyinfra's order of operations.

    A dry run's document lists only hosts *with* a change per operation: a host missing from
    an operation there is unchanged by it, which :func:`operations` does not list (callers know
    their hosts).  ERRORS gives the text attached to each failed host's failed operations."""
    errors = errors or {}
    per_host: dict[str, list[OpResult]] = {}

    def add(host: str, op: dict[str, Any], outcome: str) -> None:
        error = errors.get(host, "") if outcome == FAILED else ""
        per_host.setdefault(host, []).append(OpResult(op["op_hash"], op["name"], outcome, error))

    if dry:
        for op in payload["plan"]:
            for host in op.get("hosts_with_change", []) + op.get(
                    "hosts_with_conditional_change", []):
                add(host, op, WOULD_CHANGE)
        return per_host
    for op in payload["results"]["operations"]:
        for key, outcome in (("success", CHANGED), ("no_change", UNCHANGED), ("error", FAILED)):
            for host in op.get(key, []):
                add(host, op, outcome)
    return per_host
