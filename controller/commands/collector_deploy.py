"""`baomi collector-deploy -i INVENTORY`: install the collector on the hosts of group `collector`.

Its own command rather than part of `baomi apply`: the collector is a service with a life of
its own (an upgrade restarts it; its CA is made once and pinned by every agent), and a
baseline run over the fleet should neither build wheels nor restart the place every finding
goes to.  The deploy itself is ``deploy/collector.py``; the CA certificate of each collector
comes back to ``$BAOMI_STATE_DIR/collector/HOST/ca.pem``.
"""

from __future__ import annotations

import sys

import click

from baomi.controller.commands.apply import print_apply
from baomi.controller.runner import DEPLOYS, run
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
    load_policy_or_exit(path, as_json=as_json)
    hosts = inventory_groups_or_exit(inventory)
    names = [h for h, groups in hosts.items() if GROUP in groups
             and (not limit or h in limit)]
    if not names:
        fail(f"{inventory}: no host in group {GROUP!r}"
             + (f" matches --limit {', '.join(limit)}" if limit else "")
             + " (put the collector's server in that group)")
    result = run(inventory, path, dry=dry, limit=names, known_hosts=names,
                 deploy_file=DEPLOY_FILE, extra_env={"BAOMI_COLLECTOR_DEPLOY": "1"},
                 )
    if as_json:
        print_json(result.as_dict())
    else:
        print_apply(result, "baomi collector-deploy")
    sys.exit(result.exit_code)
