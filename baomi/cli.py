"""The `baomi` command: a thin front door that dispatches to the rooms."""

from __future__ import annotations

import click

from baomi import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="baomi")
def main() -> None:
    """baomi (保密): keep customer data confidential on a company's machines."""


def _register_admin_groups() -> None:
    # The lab is part of the administrator's tooling; it needs only the stdlib and click.
    from lab.cli import lab

    main.add_command(lab)


_register_admin_groups()
