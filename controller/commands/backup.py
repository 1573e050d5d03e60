"""`baomi backup status|prune` (R-BAK 每周二次备份).

``status -i INVENTORY [--json]``: one line per host.  Reads each host over SSH with the
inventory's own connection data (pinned known_hosts): the newest snapshot's age, gaps in the
retained chain, the job's last run and restore test.  It lists snapshots but does not run
`restic check` or a restore (that is the check's job).

``prune CLIENT... -i INVENTORY --reason TEXT``: retention (forget --keep-last --keep-monthly
--prune), which clients cannot do themselves (append-only), run on the hosts that hold the
repositories by deploy/backup_prune.py; refused per repository when its newest snapshot
collapsed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click

from baomi.controller.pyinfra_result import PyinfraOutputError
from baomi.controller.runner import DEPLOYS, run
from baomi.controls import backup as core
from baomi.controls.contract import HostContext
from baomi.inventory import InventoryError, host_groups, read
from baomi.policy import Policy, default_policy_path
from baomi.ui import fail, json_option, load_policy_or_exit, policy_option, print_json

PRUNE_DEPLOY = DEPLOYS / "backup_prune.py"


def _hosts(inventory: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        hosts = read(inventory)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    return [(h.name, h.data) for h in hosts.values()]


def _ssh(name: str, data: dict[str, Any], script: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
           "-o", "ConnectTimeout=10"]
    if data.get("ssh_key"):
        cmd += ["-i", str(data["ssh_key"]), "-o", "IdentitiesOnly=yes"]
    if data.get("ssh_known_hosts_file"):
        cmd += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
    if data.get("ssh_port"):
        cmd += ["-p", str(data["ssh_port"])]
    target = str(data.get("ssh_hostname") or name)
    if data.get("ssh_user"):
        target = f"{data['ssh_user']}@{target}"
    return subprocess.run([*cmd, target, "sh"], input=script, capture_output=True, text=True,
                          timeout=300)


def host_status(name: str, data: dict[str, Any], groups: set[str], policy: Any) -> dict[str, Any]:
    want = core.desired(HostContext.of(policy, groups, name))
    row: dict[str, Any] = {"host": name, "skipped": core.not_applicable(want) or ""}
    if row["skipped"]:
        return row
    result = _ssh(name, data, core.observe_script(want, verify=False, snapshots=True))
    if result.returncode != 0:
        row["error"] = (result.stderr.strip().splitlines() or [f"ssh exit {result.returncode}"])[-1]
        return row
    seen = core.parse(result.stdout, want)
    row["error"] = seen.repo_error
    newest = seen.snapshots[-1] if seen.snapshots else None
    row["newest_snapshot"] = newest.id if newest else ""
    row["age_hours"] = round((seen.now - newest.time).total_seconds() / 3600, 1) if newest else None
    row["gaps"] = [{"from": a.time.isoformat(), "to": b.time.isoformat(), "start": a.id,
                    "end": b.id} for a, b in core.gaps(want, seen.snapshots)]
    row["last_run"] = {k: seen.status.get(k) for k in ("time", "snapshot", "exit", "error",
                                                       "duration_seconds")}
    row["restore_test"] = seen.status.get("restore_test", {})
    return row


def _line(row: dict[str, Any]) -> str:
    if row.get("skipped"):
        return f"{row['host']:<12} skipped: {row['skipped']}"
    if row.get("error") and not row.get("newest_snapshot"):
        return f"{row['host']:<12} ERROR {row['error']}"
    age = f"{row['age_hours']} h" if row.get("age_hours") is not None else "never"
    gaps = ", ".join(f"{g['from'][:10]}→{g['to'][:10]}" for g in row["gaps"]) or "none"
    r = row.get("restore_test") or {}
    restore = (f"{r.get('matched')}/{r.get('sample')} files ok at {r.get('time')}"
               if r and not r.get("error") and not r.get("mismatches")
               else f"FAILED {r.get('error') or r.get('mismatches')}" if r else "never")
    return (f"{row['host']:<12} newest {row['newest_snapshot'] or '-'} ({age} old)  "
            f"gaps: {gaps}  last restore test: {restore}")


@click.group("backup")
def backup() -> None:
    """R-BAK 每周二次备份: backup state of the fleet."""


@backup.command("status")
@click.option("-i", "--inventory", required=True, type=click.Path(exists=True, dir_okay=False))
@policy_option
@json_option
def status(inventory: str, policy_path: str | None, as_json: bool) -> None:
    """One line per host: newest snapshot age, gaps, last restore test."""
    policy = load_policy_or_exit(policy_path, as_json=as_json)
    try:
        groups = host_groups(inventory)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [host_status(name, data, groups.get(name, set()), policy)
            for name, data in _hosts(str(Path(inventory)))]
    if as_json:
        print_json({"hosts": rows}, indent=1)
    else:
        for row in rows:
            click.echo(_line(row))


def holders(policy: Policy, inventory: str, clients: tuple[str, ...]) -> dict[str, str]:
    """client → the inventory host that holds its repository (one line for a bad name)."""
    try:
        hosts = read(inventory)
    except InventoryError as exc:
        fail(str(exc))
    out = {}
    for client in clients:
        if client not in hosts:
            fail(f"{client}: not in the inventory {inventory}")
        want = core.desired(HostContext.of(policy, hosts[client].groups, client))
        if not want.applies:
            fail(f"{client}: no backup here ({want.reason})")
        server = want.remote.server if want.remote else client
        found = next((h for h in hosts.values()
                      if server in (h.name, h.data.get("ssh_hostname"))), None)
        if found is None:
            fail(f"{client}: backup host {server!r} is not in the inventory {inventory}")
        out[client] = found.name
    return out


@backup.command("prune")
@click.argument("clients", nargs=-1, required=True)
@click.option("-i", "--inventory", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--reason", required=True,
              help="Why (recorded with each retrieval of a password from the escrow).")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False),
              envvar="BAOMI_ESCROW_IDENTITY",
              help="The escrow's offline identity (the passwords are sealed to it).")
@policy_option
@json_option
def prune(clients: tuple[str, ...], inventory: str, reason: str, identity: str | None,
          policy_path: str | None, as_json: bool) -> None:
    """Forget and prune CLIENTS' repositories on the hosts that hold them (keep-last and
    keep-monthly of the policy); refused where the newest snapshot collapsed."""
    path = policy_path or default_policy_path()
    policy = load_policy_or_exit(path, as_json=as_json)
    held = holders(policy, inventory, clients)
    places = sorted(set(held.values()))
    if not identity:
        fail("give --identity FILE (or BAOMI_ESCROW_IDENTITY): the escrow's offline key opens "
             "the repository passwords")
    try:
        result = run(inventory, path, limit=places, known_hosts=places,
                     deploy_file=PRUNE_DEPLOY, progress=lambda line: None,
                     extra_env={"BAOMI_PRUNE_CLIENTS": ",".join(clients),
                                "BAOMI_PRUNE_REASON": reason,
                                "BAOMI_ESCROW_IDENTITY": str(Path(identity).resolve())})
    except PyinfraOutputError as exc:
        fail(str(exc))
    rows = {place: {"clients": sorted(c for c, h in held.items() if h == place),
                    "outcome": result.hosts[place].controls.get("backup", "failed")
                    if place in result.hosts else "failed",
                    "error": result.hosts[place].error if place in result.hosts else "not run"}
            for place in places}
    if as_json:
        print_json({"ok": not result.failed, "holders": rows}, indent=1)
    else:
        for place, row in rows.items():
            said = f"FAILED {row['error']}" if row["error"] else row["outcome"]
            click.echo(f"{place:<12} {' '.join(row['clients'])}: {said}")
    if result.failed:
        raise SystemExit(1)
