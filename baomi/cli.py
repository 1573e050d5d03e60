"""The `baomi` command: a thin front door that dispatches to the rooms.

Every subcommand that reads the policy loads it through :func:`baomi.ui.load_policy_or_exit`,
so a bad policy stops the command (exit status 2, every problem listed as FILE:LINE:COL)
before anything touches a host.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click
from rich.table import Table

from baomi import __version__
from baomi.clauses import CLAUSES
from baomi.ui import console, json_option, load_policy_or_exit, print_json


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


@policy.command("check")
@policy_file
@json_option
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
        print_json(summary)
    else:
        click.echo(f"{loaded.source}: valid ({len(loaded.levels)} levels, "
                   f"{len(loaded.sensitive_paths)} sensitive paths, "
                   f"{len(loaded.waivers)} waivers)")


def _served_by(row: dict[str, Any], key: str) -> str:
    found = sorted({c[key] for c in row["controls"] if c[key]})
    return "\n".join(found) if found else "—"


@policy.command("explain")
@policy_file
@json_option
def policy_explain(file: str | None, as_json: bool) -> None:
    """Show, for every clause, the settings that serve it and what enforces, checks, watches it."""
    from baomi.controls import explain

    loaded = load_policy_or_exit(file, as_json=as_json)
    rows = explain(loaded)
    if as_json:
        print_json({"file": loaded.source, "clauses": rows})
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
    console.print(table)
    unserved = [r["clause"] for r in rows if not (r["enforced"] or r["verified"] or r["watched"])]
    if unserved:
        console.print(f"not yet enforced, verified or watched by any module: {', '.join(unserved)}",
                  markup=False)
    console.print(f"{len(CLAUSES)} clauses in the catalogue", markup=False)


def _register_admin_groups() -> None:
    # The lab is the administrator's tooling; it needs only the stdlib and click.
    from baomi.lab.cli import lab

    main.add_command(lab)
    from baomi.controller.commands.apply import apply_cmd

    main.add_command(apply_cmd)
    from baomi.controller.commands.offboard import offboard

    main.add_command(offboard)
    from baomi.controller.commands.accounts import account

    main.add_command(account)
    from baomi.controller.commands.backup import backup

    main.add_command(backup)
    from baomi.controller.commands.escrow import escrow

    main.add_command(escrow)


_register_admin_groups()
