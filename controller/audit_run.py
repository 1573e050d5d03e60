"""Running an audit: ``checks/`` through pytest + testinfra over SSH, hosts in parallel.

Why one pytest per group of hosts rather than one pytest with workers: each child observes its
hosts once per control (the checks share a control's reading per host and session), its OpenSSH
master connections (ControlMaster) stay with it, and a host that does not answer only slows its
own child.  Children report through the checks' results plugin (``--baomi-results``: a JSON file
each; ``--baomi-progress``: one line per host × check, the progress display), so nothing here
reads pytest's text.

SSH is OpenSSH with host keys pinned: the inventory's ``ssh_known_hosts_file`` and
``StrictHostKeyChecking yes``, as ``baomi apply`` connects (or an ``--ssh-config`` given).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from baomi.checks.report import PROGRESS
from baomi.inventory import InventoryHost
from baomi.policy import Policy
from baomi.results import Audit, AuditFileError, CheckResult, error, now_utc
from baomi.waivers import stale

CHECKS_DIR = Path(__file__).resolve().parents[1] / "checks"
_SAFE = re.compile(r"[A-Za-z0-9_.:@/%+-]+")


class AuditError(Exception):
    """The audit could not run at all; the message says what and where."""


def select(hosts: dict[str, InventoryHost], limit: Iterable[str]) -> list[str]:
    """The hosts of ``--limit`` (host or group names; all when none), in inventory order."""
    wanted = list(limit)
    if not wanted:
        return list(hosts)
    unknown = [w for w in wanted if w not in hosts
               and not any(w in h.groups for h in hosts.values())]
    if unknown:
        raise AuditError(f"--limit {', '.join(unknown)}: neither a host nor a group of the "
                         "inventory")
    return [n for n, h in hosts.items() if n in wanted or h.groups & set(wanted)]


def ssh_config(hosts: dict[str, InventoryHost], names: list[str], folder: Path) -> Path:
    """An ssh_config from the inventory's connection data: pinned keys, one master per host."""
    blocks = []
    for name in names:
        data = hosts[name].data
        known = data.get("ssh_known_hosts_file")
        if not known:
            raise AuditError(f"inventory host {name}: no ssh_known_hosts_file (host keys must "
                             "be pinned); give one, or --ssh-config")
        lines = [f"Host {name}", f"    HostName {data.get('ssh_hostname', name)}",
                 f"    UserKnownHostsFile {known}", "    StrictHostKeyChecking yes",
                 "    BatchMode yes", "    ControlMaster auto",
                 f"    ControlPath {folder}/cm-%C", "    ControlPersist 60s",
                 "    ConnectTimeout 5", "    LogLevel ERROR"]
        for key, option in (("ssh_user", "User"), ("ssh_port", "Port"),
                            ("ssh_key", "IdentityFile")):
            if key in data:
                lines.append(f"    {option} {data[key]}")
        if "ssh_key" in data:
            lines.append("    IdentitiesOnly yes")
        for line in lines:
            if not _SAFE.fullmatch(line.split(None, 1)[-1].strip()):
                raise AuditError(f"inventory host {name}: {line.strip()!r} is not a plain value")
        blocks.append("\n".join(lines) + "\n")
    path = folder / "ssh_config"
    path.write_text("\n".join(blocks), encoding="utf-8")
    path.chmod(0o600)
    return path


def default_jobs() -> int:
    """One pytest child per CPU (at most 8): each child reads its hosts concurrently over ssh,
    so what a child costs is its own CPU (start-up, pytest's work per check); more children
    than CPUs only add start-ups (measured in docs/audit.md, "Figures")."""
    return max(1, min(8, os.cpu_count() or 1))


def chunks(names: list[str], jobs: int) -> list[list[str]]:
    """``jobs`` groups of hosts, round robin (neighbours in the inventory spread out)."""
    n = max(1, min(jobs, len(names)))
    return [names[i::n] for i in range(n)]


@dataclass
class Progress:
    """What the children reported so far (thread-safe enough: one writer per counter)."""

    total: int = 0
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, raw: str) -> None:
        try:
            item = json.loads(raw)
        except ValueError:
            return
        with self.lock:
            if "collected" in item:
                self.total += int(item["collected"])
            elif "status" in item:
                self.done += 1
                status = str(item["status"])
                self.by_status[status] = self.by_status.get(status, 0) + 1


@dataclass
class Child:
    hosts: list[str]
    results: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)


def _pump(stream: IO[str], child: Child, progress: Progress) -> None:
    for raw in stream:
        # pytest's own status letters (".", "F", "s") come first on the line, unended.
        at = raw.find(PROGRESS)
        if at >= 0:
            progress.line(raw[at + len(PROGRESS):])
        else:
            child.output.append(raw.rstrip("\n"))
            del child.output[:-40]  # the tail is what explains a failed child


def run_checks(policy_path: Path, inventory: Path, names: list[str], config: Path,
               folder: Path, jobs: int, progress: Progress,
               tick: Callable[[], None] = lambda: None) -> list[CheckResult]:
    """Every check on every host of ``names``: pytest children in parallel, records merged."""
    children: list[Child] = []
    pumps = []
    for index, group in enumerate(chunks(names, jobs)):
        results = folder / f"results-{index}.json"
        # Only testinfra's plugin: the rest installed beside pytest (hypothesis, schemathesis,
        # playwright...) took ~4 s of CPU per child to import and serves no check.
        # No failure sections or summary lines: the records carry each failure's findings, and
        # pytest's summary of 500 failures cost seconds of CPU (it is quadratic in the reports).
        cmd = [sys.executable, "-m", "pytest", "-p", "testinfra.plugin", "-p", "no:cacheprovider",
               "-q", "--no-header", "--tb=no", "-rN",
               "-o", "addopts=", "--rootdir", str(CHECKS_DIR), str(CHECKS_DIR),
               f"--hosts={','.join(group)}", f"--ssh-config={config}",
               f"--inventory={inventory}", f"--policy={policy_path}",
               f"--baomi-results={results}", "--baomi-progress"]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=folder, env=env)
        child = Child(group, results, proc)
        assert proc.stdout is not None  # noqa: S101 (stdout=PIPE)
        pump = threading.Thread(target=_pump, args=(proc.stdout, child, progress), daemon=True)
        pump.start()
        children.append(child)
        pumps.append(pump)
    # Wait for the children, not for their output's end: an ssh master (ControlPersist) they
    # started keeps the pipe open after they exit.
    while any(c.process.poll() is None for c in children):
        tick()
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.process.wait(0.1)
    for p in pumps:
        p.join(1.0)
    tick()
    out: list[CheckResult] = []
    for child in children:
        out += _child_results(child)
    return sorted(out, key=lambda r: (names.index(r.host) if r.host in names else 0, r.check))


def _child_results(child: Child) -> list[CheckResult]:
    """A child's records; a child that wrote none (pytest could not start, a usage error)
    gives one error per host with the tail of what it printed."""
    found: list[CheckResult] = []
    if child.results.is_file():
        try:
            doc = json.loads(child.results.read_text(encoding="utf-8"))
            found = Audit.from_dict(doc, str(child.results)).results
        except (ValueError, AuditFileError):
            found = []
    tail = next((line for line in reversed(child.output) if line.strip()), "no output")
    why = f"the checks did not run (pytest exit {child.process.returncode}): {tail}"
    seen = {r.host for r in found}
    return found + [error(h, "audit.run", ("R-AUD",), why) for h in child.hosts if h not in seen]


def stop_masters(config: Path, names: list[str]) -> None:
    """End the ssh master connections of our own ssh_config (they would linger 60 s)."""
    for name in names:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", name], capture_output=True,
                       timeout=10, check=False)


def policy_facts(policy: Policy, path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    return {"file": str(path.resolve()), "version": 1,
            "sha256": hashlib.sha256(raw).hexdigest()}


def waiver_rows(policy: Policy, results: list[CheckResult], today_iso: str) -> list[dict[str, Any]]:
    """Every waiver of the policy with what it did in this audit: waived N checks, expired,
    or stale (live, but nothing to waive)."""
    import datetime as dt

    today = dt.date.fromisoformat(today_iso)
    used: dict[int, int] = {}
    for r in results:
        if r.waiver and not r.waiver.get("expired"):
            used[int(r.waiver["index"])] = used.get(int(r.waiver["index"]), 0) + 1
    stale_ids = {i for i, _ in stale(policy, used, today)}
    rows = []
    for i, w in enumerate(policy.waivers):
        state = ("expired" if w.expires < today else "stale" if i in stale_ids else "in force")
        rows.append({"index": i, "clause": w.clause, "control": w.control,
                     "hosts": list(w.hosts), "reason": w.reason, "approver": w.approver,
                     "expires": w.expires.isoformat(), "state": state,
                     "waived": used.get(i, 0)})
    return rows


def audit(policy: Policy, policy_path: Path, inventory: Path,
          hosts: dict[str, InventoryHost], names: list[str], limit: list[str],
          given_config: Path | None, jobs: int, progress: Progress,
          tick: Callable[[], None] = lambda: None) -> Audit:
    """The whole run: ssh_config, children, merge, waivers' states."""
    started = now_utc()
    with tempfile.TemporaryDirectory(prefix="baomi-audit-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o700)
        config = given_config or ssh_config(hosts, names, folder)
        try:
            results = run_checks(policy_path.resolve(), inventory.resolve(), names, config,
                                 folder, jobs, progress, tick)
        finally:
            if given_config is None:
                stop_masters(config, names)
    return Audit(results, organisation=policy.organisation,
                 policy=policy_facts(policy, policy_path),
                 scope={"inventory": str(inventory.resolve()), "hosts": names, "limit": limit,
                        "groups": {n: sorted(hosts[n].groups) for n in names}},
                 started=started, finished=now_utc(),
                 waivers=waiver_rows(policy, results, started[:10]),
                 warnings=[str(w) for w in policy.warnings])
