"""The `baomi` command: a thin front door that dispatches to the rooms.

Every subcommand that reads the policy loads it through :func:`load_policy_or_exit`, so a bad
policy stops the command (exit status 2, every problem listed as FILE:LINE:COL) before
anything touches a host.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from baomi import __version__
from baomi.clauses import CLAUSES
from baomi.policy import Policy, PolicyError, default_policy_path, load

EXIT_POLICY = 2
out = Console(highlight=False)


def load_policy_or_exit(path: str | None, *, as_json: bool = False) -> Policy:
    """Load the policy or stop the command with every problem and exit status 2."""
    try:
        return load(path or default_policy_path())
    except PolicyError as exc:
        if as_json:
            print(json.dumps({"ok": False, "problems": [p.as_dict() for p in exc.problems]},
                             ensure_ascii=False, indent=2))
        else:
            # Plain lines, never wrapped: editors and CI parse FILE:LINE:COL.
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            count = len(exc.problems)
            click.echo(f"policy: {count} problem{'s' if count != 1 else ''}; nothing was changed",
                       err=True)
        sys.exit(EXIT_POLICY)


class FrontDoor(click.Group):
    """Turns an unexpected exception into one clear line (a traceback is a bug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if os.environ.get("BAOMI_DEBUG"):
                traceback.print_exc()
            click.echo(f"baomi: internal error: {type(exc).__name__}: {exc} "
                       "(set BAOMI_DEBUG=1 for the traceback, and please report it)", err=True)
            sys.exit(70)


@click.group(cls=FrontDoor, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="baomi")
def main() -> None:
    """baomi (保密): keep customer data confidential on a company's machines."""


@main.group()
def policy() -> None:
    """Validate and explain the policy file."""


policy_file = click.argument("file", required=False, type=click.Path(dir_okay=False))
json_flag = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@policy.command("check")
@policy_file
@json_flag
def policy_check(file: str | None, as_json: bool) -> None:
    """Validate FILE (default: $BAOMI_POLICY or ./policy.yaml); exit 0 if valid, 2 if not."""
    loaded = load_policy_or_exit(file, as_json=as_json)
    summary = {
        "ok": True,
        "file": loaded.source,
        "levels": list(loaded.levels),
        "sensitive_paths": len(loaded.sensitive_paths),
        "waivers": len(loaded.waivers),
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(f"{loaded.source}: valid ({len(loaded.levels)} levels, "
                   f"{len(loaded.sensitive_paths)} sensitive paths, "
                   f"{len(loaded.waivers)} waivers)")


def _served_by(row: dict[str, Any], key: str) -> str:
    found = sorted({c[key] for c in row["controls"] if c[key]})
    return "\n".join(found) if found else "—"


@policy.command("explain")
@policy_file
@json_flag
def policy_explain(file: str | None, as_json: bool) -> None:
    """Show, for every clause, the settings that serve it and what enforces, checks, watches it."""
    from baomi.controls import explain

    loaded = load_policy_or_exit(file, as_json=as_json)
    rows = explain(loaded)
    if as_json:
        print(json.dumps({"file": loaded.source, "clauses": rows}, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"baomi policy explain: {loaded.source}", show_lines=True)
    for column in ("clause", "title", "controls (policy sections)", "enforced by (deploy)",
                   "verified by (check)", "watched by (agent)"):
        table.add_column(column)
    for row in rows:
        controls = "\n".join(c["section"] for c in row["controls"]) or "(no control)"
        agents = sorted({r for c in row["controls"] for r in c["agent_rules"]})
        table.add_row(row["clause"], row["title"], controls, _served_by(row, "deploy"),
                      _served_by(row, "check"), "\n".join(agents) or "—")
    out.print(table)
    unserved = [r["clause"] for r in rows if not (r["enforced"] or r["verified"] or r["watched"])]
    if unserved:
        out.print(f"not yet enforced, verified or watched by any module: {', '.join(unserved)}",
                  markup=False)
    out.print(f"{len(CLAUSES)} clauses in the catalogue", markup=False)


@main.command("apply")
@click.option("-i", "--inventory", required=True, help="pyinfra inventory of the fleet.")
@click.option("--policy", "policy_path", default=None, help="Policy file (default: as above).")
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option("--diff", is_flag=True, help="Show the differences of changed files.")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--only", multiple=True, help="Only these controls (repeatable).")
@json_flag
def apply_cmd(inventory: str, policy_path: str | None, dry: bool, diff: bool,
              limit: tuple[str, ...], only: tuple[str, ...], as_json: bool) -> None:
    """Apply the baseline (every control of the policy) to the inventory's hosts."""
    from baomi.deploy.common import ALL_CONTROLS
    from baomi.deploy.runner import run
    from baomi.inventory import InventoryError, host_groups

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

    quiet = ("Success", "No changes", "Skipped", "Connected", "Ready:")

    def progress(line: str) -> None:
        text = line.strip()
        host_line = text.startswith("[")
        if host_line and text.split("]", 1)[-1].strip().startswith(quiet):
            return
        if diff or host_line or (not as_json and text.startswith("--> ")):
            click.echo(line, err=True)

    result = run(inventory, path, dry=dry, diff=diff, limit=list(limit), only=list(only),
                 known_hosts=names, progress=progress)
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        print_apply(result, "baomi apply")
    sys.exit(result.exit_code)


def print_apply(result: Any, title: str) -> None:
    """The host × control table of a pyinfra run (apply, account apply)."""
    controls = sorted({c for r in result.hosts.values() for c in r.controls})
    table = Table(title=title + (" --dry" if result.dry else "")
                  + f" ({result.seconds:.1f}s)")
    table.add_column("host")
    for control in controls:
        table.add_column(control)
    table.add_column("problem")
    colours = {"changed": "yellow", "would change": "yellow", "unchanged": "green",
               "failed": "red"}
    for host, r in sorted(result.hosts.items()):
        cells = []
        for control in controls:
            outcome = r.controls.get(control, "—")
            cells.append(f"[{colours.get(outcome, 'dim')}]{outcome}[/]")
        table.add_row(host, *cells, r.error or "")
    out.print(table)
    changed = sum(1 for r in result.hosts.values() for o in r.controls.values()
                  if o in ("changed", "would change"))
    verb = "would change" if result.dry else "changed"
    out.print(f"{len(result.hosts)} hosts, {changed} host×control {verb}, "
              f"{len(result.failed)} failed", markup=False)


def _register_admin_groups() -> None:
    # The lab is the administrator's tooling; it needs only the stdlib and click.
    from baomi.lab.cli import lab

    main.add_command(lab)
    from baomi.deploy.offboard_cli import offboard

    main.add_command(offboard)
    from baomi.deploy.accounts_cli import account

    main.add_command(account)
    from baomi.deploy.backup_cli import backup

    main.add_command(backup)
    from baomi.deploy.escrow_cli import escrow

    main.add_command(escrow)


_register_admin_groups()
