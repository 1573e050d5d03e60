"""`baomi apply`: the baseline (every control of the policy) on the inventory's hosts."""

from __future__ import annotations

import sys

import click
from rich.markup import escape
from rich.table import Table

from baomi.controller.runner import ApplyResult, run
from baomi.inventory import InventoryError, host_groups
from baomi.policy import default_policy_path
from baomi.ui import console, json_option, load_policy_or_exit, policy_option, print_json

# pyinfra's per-host status lines that say nothing new; the rest (errors, diffs) is shown.
QUIET = ("Success", "No changes", "Skipped", "Connected", "Ready:")


@click.command("apply")
@click.option("-i", "--inventory", required=True, help="pyinfra inventory of the fleet.")
@policy_option
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option("--diff", is_flag=True, help="Show the differences of changed files.")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--only", multiple=True, help="Only these controls (repeatable).")
@json_option
def apply_cmd(inventory: str, policy_path: str | None, dry: bool, diff: bool,
              limit: tuple[str, ...], only: tuple[str, ...], as_json: bool) -> None:
    """Apply the baseline (every control of the policy) to the inventory's hosts."""
    from baomi.deploy.common import ALL_CONTROLS

    path = policy_path or default_policy_path()
    load_policy_or_exit(path, as_json=as_json)
    for control in only:
        if control not in ALL_CONTROLS:
            raise click.BadParameter(f"unknown control {control!r}; known: "
                                     + ", ".join(ALL_CONTROLS), param_hint="--only")
    try:
        hosts = host_groups(inventory)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    names = [h for h, g in hosts.items()
             if not limit or h in limit or g & set(limit)]
    if not names:
        raise click.ClickException(f"no host of {inventory} matches --limit {', '.join(limit)}")

    def progress(line: str) -> None:
        text = line.strip()
        host_line = text.startswith("[")
        if host_line and text.split("]", 1)[-1].strip().startswith(QUIET):
            return
        if diff or host_line or (not as_json and text.startswith("--> ")):
            click.echo(line, err=True)

    result = run(inventory, path, dry=dry, diff=diff, limit=list(limit), only=list(only),
                 known_hosts=names, progress=progress)
    if as_json:
        print_json(result.as_dict())
    else:
        print_apply(result, "baomi apply")
    sys.exit(result.exit_code)


def print_apply(result: ApplyResult, title: str) -> None:
    """One row per host: the controls it changed (or would change) and those that failed by
    name, the unchanged ones counted. A host × control grid stops being readable past a few
    controls in an 80-column terminal (the baseline has 16); this stays readable at any fleet
    and baseline size, and the control names wrap instead of being cut."""
    verb = "would change" if result.dry else "changed"
    table = Table(title=title + (" --dry" if result.dry else "")
                  + f" ({result.seconds:.1f}s)")
    table.add_column("host", no_wrap=True)
    table.add_column(verb, style="yellow")
    table.add_column("unchanged", style="green", justify="right")
    table.add_column("failed", style="red")
    table.add_column("problem")
    for host, r in sorted(result.hosts.items()):
        by: dict[str, list[str]] = {}
        for control, outcome in sorted(r.controls.items()):
            by.setdefault(outcome, []).append(control)
        moved = by.get("changed", []) + by.get("would change", [])
        # Control names are ours; the problem is text a host printed: never read as markup.
        table.add_row(escape(host), ", ".join(moved) or "—", str(len(by.get("unchanged", []))),
                      ", ".join(by.get("failed", [])), escape(r.error or ""))
    console.print(table)
    changed = sum(1 for r in result.hosts.values() for o in r.controls.values()
                  if o in ("changed", "would change"))
    console.print(f"{len(result.hosts)} hosts, {changed} host×control {verb}, "
                  f"{len(result.failed)} failed", markup=False)
