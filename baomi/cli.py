"""The `baomi` command: a thin front door that dispatches to the rooms.

Every subcommand that reads the policy loads it through :func:`baomi.ui.load_policy_or_exit`,
so a bad policy stops the command (exit status 2, every problem listed as FILE:LINE:COL)
before anything touches a host.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click
from rich.table import Table

from baomi import __version__
from baomi.clauses import CLAUSES
from baomi.ui import console, json_option, load_policy_or_exit, print_json

#: The subcommands outside the front door: name → ("module:attribute", short help), imported
#: only when that command runs, so `baomi --help` and `baomi policy ...` never load the admin
#: stack (pyinfra, testinfra, cryptography).  The short help is written here because listing it
#: must not import the module; a unit test keeps it equal to the command's own.  A new room's
#: command is one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "account": ("baomi.controller.commands.accounts:account",
                "R-PRV: accounts only with a recorded request (部门主管) and approval (分管副总)."),
    "agent": ("baomi.agent.cli:agent",
              "The resident agent (R-FIM, R-LOG): baseline, real-time watch, findings to the "
              "collector."),
    "agent-deploy": ("baomi.controller.commands.agent_deploy:agent_deploy",
                     "Install the resident agent on the inventory's hosts and enrol it with the "
                     "collector."),
    "apply": ("baomi.controller.commands.apply:apply_cmd",
              "Apply the baseline (every control of the policy) to the inventory's hosts."),
    "audit": ("baomi.controller.commands.audit:audit_cmd",
              "Audit the fleet: every check per host and clause, with evidence, waivers and a "
              "report."),
    "backup": ("baomi.controller.commands.backup:backup",
               "R-BAK 每周二次备份: backup state of the fleet."),
    "collector": ("baomi.collector.cli:collector",
                  "The central collector: where every host's findings end up."),
    "collector-deploy": ("baomi.controller.commands.collector_deploy:collector_deploy",
                         "Install the collector service on the inventory's hosts of group "
                         "`collector`."),
    "disk": ("baomi.controller.commands.disk:disk",
             "R-ENC: one-time permissions to wipe one disk (host + device + serial + ticket)."),
    "escrow": ("baomi.controller.commands.escrow:escrow",
               "Recovery secrets escrowed on the controller; every retrieval is recorded."),
    "findings": ("baomi.controller.commands.session:findings_cmd",
                 "Findings the collector holds, newest evidence per host, check and subject."),
    "hosts": ("baomi.controller.commands.session:hosts_cmd",
              "Hosts the collector knows: agent state, last seen, open findings by severity."),
    "lab": ("baomi.lab.cli:lab",
            "Start, inspect and remove the lab's hosts (real Linux hosts on this machine)."),
    "login": ("baomi.controller.commands.session:login_cmd",
              "Log in to the collector; the session is kept 0600 for hosts and findings."),
    "offboard": ("baomi.controller.commands.offboard:offboard",
                 "R-OFF/R-RET: freeze USER on every host at once; delete at the end of the next "
                 "month."),
}


def load_command(name: str) -> click.Command:
    """Import the command NAME of :data:`COMMANDS` (a missing admin stack is one clear line)."""
    module_name, attribute = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        stack = "the agent's stack (pip install 'baomi[agent]')" if name == "agent" else \
            "the administrator's stack (pip install 'baomi[admin]')"
        raise click.ClickException(f"baomi {name} needs {stack}: {exc}") from None
    command = getattr(module, attribute)
    # S101: the table is ours; a test keeps it true
    assert isinstance(command, click.Command), f"{COMMANDS[name][0]} is not a click command"  # noqa: S101
    return command


class FrontDoor(click.Group):
    """Turns an unexpected exception into one clear line (a traceback is a bug), and loads the
    subcommands of :data:`COMMANDS` only when one is called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            return load_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing imports every command for its help; this one reads the table
        # (and shortens as click does).
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        listed = {name: click.Command(name, help=text) for name, (_, text) in COMMANDS.items()}
        rows = [(name, (listed.get(name) or self.commands[name]).get_short_help_str(limit))
                for name in names]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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
        "warnings": [w.as_dict() for w in loaded.warnings],
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(f"{loaded.source}: valid ({len(loaded.levels)} levels, "
                   f"{len(loaded.sensitive_paths)} sensitive paths, "
                   f"{len(loaded.waivers)} waiver{'' if len(loaded.waivers) == 1 else 's'}"
                   f"{f', {len(loaded.warnings)} warnings' if loaded.warnings else ''})")


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
        console.print(f"not yet enforced, verified or watched by any module: "
                      f"{', '.join(unserved)}", markup=False)
    console.print(f"{len(CLAUSES)} clauses in the catalogue", markup=False)
