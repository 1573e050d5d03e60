"""`baomi collector-deploy -i INVENTORY`: install the collector on the hosts of group `collector`.

Its own command rather than part of `baomi apply`: the collector is a service with a life of
its own (an upgrade restarts it; its CA is made once and pinned by every agent), and a
baseline run over the fleet should neither build wheels nor restart the place every finding
goes to.  The deploy itself is ``deploy/collector.py``; the CA certificate of each collector
comes back to ``$BAOMI_STATE_DIR/collector/HOST/ca.pem``.

Two passes: the collector hosts (the service, the fleet's inventory and pinned host keys, a
key made there, the regular audit's timer), then every host of the inventory, where each
collector's key is authorised for root from the collector's addresses only (this command and
not the baseline: the key and the addresses come from the collector's own pass, and a
re-keyed or re-addressed collector must reach the fleet again at once, without a baseline run
over every host).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import click

from baomi.controller.commands.apply import print_apply
from baomi.controller.runner import DEPLOYS, run
from baomi.controls.collector import pinned_ca_path
from baomi.fleet_access import FleetError, from_inventory, groups_map_from_inventory
from baomi.policy import default_policy_path
from baomi.ui import (
    fail,
    inventory_groups_or_exit,
    json_option,
    load_policy_or_exit,
    policy_option,
    print_json,
)

DEPLOY_FILE = DEPLOYS / "collector.py"
GROUP = "collector"


@click.command("collector-deploy")
@click.option("-i", "--inventory", required=True, help="pyinfra inventory of the fleet.")
@policy_option
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option("--limit", multiple=True, help="Only these collector hosts (repeatable).")
@json_option
def collector_deploy(inventory: str, policy_path: str | None, dry: bool,
                     limit: tuple[str, ...], as_json: bool) -> None:
    """Install the collector service on the inventory's hosts of group `collector`."""
    path = policy_path or default_policy_path()
    policy = load_policy_or_exit(path, as_json=as_json)
    hosts = inventory_groups_or_exit(inventory)
    try:
        from_inventory(inventory)
    except FleetError as exc:
        fail(f"the fleet for the collector's regular audit: {exc}")
    try:
        groups_map_from_inventory(inventory)
    except FleetError as exc:
        fail(f"the waivers' host → groups map for the collector: {exc}")
    schedule_problem(policy.reporting.schedule, policy.source)
    names = [h for h, groups in hosts.items() if GROUP in groups
             and (not limit or h in limit)]
    if not names:
        fail(f"{inventory}: no host in group {GROUP!r}"
             + (f" matches --limit {', '.join(limit)}" if limit else "")
             + " (put the collector's server in that group)")
    result = run(inventory, path, dry=dry, limit=names, known_hosts=names,
                 deploy_file=DEPLOY_FILE, extra_env={"BAOMI_COLLECTOR_DEPLOY": "1",
                                                     "BAOMI_FLEET_INVENTORY": inventory})
    keyed = [n for n in names if n not in result.failed
             and (pinned_ca_path(n).parent / "fleet_key.pub").is_file()]
    fleet = None
    if keyed:
        fleet = run(inventory, path, dry=dry, limit=list(hosts), known_hosts=list(hosts),
                    deploy_file=DEPLOY_FILE, extra_env={"BAOMI_COLLECTOR_DEPLOY": "fleet",
                                                        "BAOMI_FLEET_COLLECTORS": ",".join(keyed)})
    if as_json:
        print_json({**result.as_dict(), "fleet_keys": fleet.as_dict() if fleet else None})
    else:
        print_apply(result, "baomi collector-deploy")
        if fleet is not None:
            print_apply(fleet, "baomi collector-deploy (the collectors' keys on the fleet)")
        else:
            print("fleet keys: no collector key yet (a --dry run before the first deploy, or "
                  "the collectors failed): nothing authorised on the fleet")
    sys.exit(max(result.exit_code, fleet.exit_code if fleet else 0))


def schedule_problem(schedule: str, source: str) -> None:
    """A schedule systemd would refuse ends the command here (systemd's own reading, when
    the controller has systemd-analyze; the collector host checks it again)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    proc = subprocess.run([analyze, "calendar", schedule], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        fail(f"{source}: reporting.schedule {schedule!r}: not a systemd calendar expression "
             f"({' '.join(proc.stderr.split())[:200]})")
