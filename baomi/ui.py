"""What every `baomi` command shares: the policy gate, the console, its options, its errors.

A leaf of the core: it imports the policy loader, click and rich, and nothing of the rooms or
of the front door (``baomi.cli``), so any command module can use it without an import circle.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

from baomi.inventory import InventoryError, host_groups
from baomi.policy import Policy, PolicyError, default_policy_path, load

EXIT_USAGE = 2  # bad input (policy, arguments, refusals): nothing was changed
console = Console(highlight=False)

#: ``--json``: machine-readable output on stdout (the same option on every command).
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
#: ``--policy FILE`` for commands that also take other arguments.
policy_option = click.option("--policy", "policy_path", default=None,
                             help="Policy file (default: $BAOMI_POLICY or ./policy.yaml).")


def load_policy_or_exit(path: str | None, *, as_json: bool = False) -> Policy:
    """Load the policy or stop the command with every problem and exit status 2."""
    try:
        loaded = load(path or default_policy_path())
    except PolicyError as exc:
        if as_json:
            print_json({"ok": False, "problems": [p.as_dict() for p in exc.problems]})
        else:
            # Plain lines, never wrapped: editors and CI parse FILE:LINE:COL.
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            count = len(exc.problems)
            click.echo(f"policy: {count} problem{'s' if count != 1 else ''}; nothing was changed",
                       err=True)
        sys.exit(EXIT_USAGE)
    for warning in loaded.warnings:  # e.g. an expired waiver: it no longer waives
        click.echo(f"warning: {warning}", err=True)
    return loaded


def print_json(data: Any, *, indent: int = 2) -> None:
    """One JSON document on stdout, non-ASCII kept readable (names, clause titles)."""
    print(json.dumps(data, ensure_ascii=False, indent=indent))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr and the exit status: the end of a command that was refused."""
    click.echo(message, err=True)
    sys.exit(code)


def inventory_groups_or_exit(inventory: str) -> dict[str, set[str]]:
    """{host: groups} of a pyinfra inventory, or one line naming the problem (exit 2)."""
    try:
        return host_groups(inventory)
    except InventoryError as exc:
        fail(str(exc))
