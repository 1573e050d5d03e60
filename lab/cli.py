"""`baomi lab`: placeholder replaced by the lab implementation."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """Start, inspect and remove the lab's hosts."""
