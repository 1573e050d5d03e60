"""`baomi lab`: start, inspect and remove the lab's hosts from the command line.

Thin: parses options, calls lab.lifecycle, prints. A LabError becomes one line on stderr
(exit 1; exit 2 when not root), never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from baomi.lab.errors import LabError, NotRootError
from baomi.lab.state import default_lab_name

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotRootError as exc:
            click.echo(f"baomi lab: {exc}", err=True)
            sys.exit(2)
        except LabError as exc:
            click.echo(f"baomi lab: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("baomi lab: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _name_option(fn: F) -> F:
    return click.option(
        "--name", "name", default=default_lab_name, show_default="baomi, or $BAOMI_LAB",
        help="Which lab: its namespaces, bridge and state dir carry this name (1-8 a-z0-9).",
    )(fn)


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def lab() -> None:
    """Start, inspect and remove the lab's hosts (real Linux hosts on this machine).

    State lives in $BAOMI_LAB_DIR/NAME (default /var/lib/baomi-lab/NAME), the image
    cache in $BAOMI_LAB_CACHE (default /var/cache/baomi-lab). Needs root.
    """


@lab.command()
@_name_option
@click.option("--servers", type=int, default=0, help="Add N servers (srv1, srv2, ...).")
@click.option("--systemd-servers", type=int, default=0,
              help="How many OF those servers boot systemd (systemd-nspawn) instead of "
                   "running sshd alone; they are numbered last.")
@click.option("--workstations", type=int, default=0, help="Add N workstations (ws1, ...).")
@click.option("--systemd-workstations", type=int, default=0,
              help="How many OF those workstations boot systemd.")
@click.option("--backup", type=int, default=0,
              help="Add N backup hosts (bak1, ...): serve repositories over SFTP.")
@click.option("--collector", type=int, default=0,
              help="Add N collector hosts (col1, ...; group collector): the findings service.")
@click.option("--systemd-collector", type=int, default=0,
              help="How many OF those collector hosts boot systemd (to run it as a unit).")
@click.option("--vm", is_flag=True, help="Add vm1: a qemu VM (groups servers, vm), slow.")
@_one_line_errors
def up(name: str, servers: int, systemd_servers: int, workstations: int,
       systemd_workstations: int, backup: int, collector: int, systemd_collector: int,
       vm: bool) -> None:
    """Start lab NAME, or add hosts to it when it already runs.

    Without counts, a new lab is the demo lab: srv1 (plain), srv2 (systemd), ws1, bak1;
    on a running lab, nothing is added. Counts always ADD hosts, numbered on from the
    existing ones. A lab left by a crashed run is cleared first.

    \b
    Examples:
      baomi lab up                                   # the demo lab
      baomi lab up --servers 2 --systemd-servers 1 --workstations 1 --backup 1
      baomi lab up --name t1 --servers 3 --vm
      baomi lab up --name t2 --servers 1 --collector 1 --systemd-collector 1
    """
    from baomi.lab.lifecycle import Request
    from baomi.lab.lifecycle import up as lab_up

    req = Request(servers=servers, workstations=workstations, backup=backup,
                  collector=collector, systemd_servers=systemd_servers,
                  systemd_workstations=systemd_workstations,
                  systemd_collector=systemd_collector, vm=vm)
    res = lab_up(name, req, log=_log)
    if res.image_seconds is not None:
        click.echo(f"built the image in {res.image_seconds:.1f}s", err=True)
    added = ", ".join(res.added) if res.added else "nothing (already up)"
    click.echo(f"lab {name}: added {added} in {res.seconds:.1f}s; "
               f"{len(res.state.hosts)} hosts on {res.state.subnet}")
    click.echo(f"  inventory  {res.paths.inventory}")
    click.echo(f"  ssh_config {res.paths.ssh_config}   (ssh -F {res.paths.ssh_config} "
               f"{res.state.hosts[0].name if res.state.hosts else 'HOST'})")


@lab.command()
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_one_line_errors
def status(name: str, as_json: bool) -> None:
    """Show each host (groups, flavour, address) and whether its sshd answers."""
    from baomi.lab.lifecycle import status as lab_status

    st = lab_status(name)
    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    if not st.exists:
        click.echo(f"lab {name}: not running")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lab {name} ({st.subnet}, bridge {st.bridge})")
    for col in ("host", "groups", "flavour", "address", "pid", "sshd", "ssh login"):
        table.add_column(col)
    for h in st.hosts:
        table.add_row(h.name, ",".join(h.groups), h.flavour, h.address, str(h.pid),
                      "[green]answers[/]" if h.banner else "[red]silent[/]",
                      "[green]ok[/]" if h.ssh_ok else "[red]fails[/]")
    console = Console()
    console.print(table)
    console.print(f"inventory   {st.inventory}\nssh_config  {st.ssh_config}\n"
                  f"known_hosts {st.known_hosts}\nkey         {st.key}")


@lab.command()
@_name_option
@_one_line_errors
def down(name: str) -> None:
    """Remove lab NAME: hosts, namespaces, veths, bridge, loop devices, state dir.

    Idempotent; also clears what a crashed run left (anything with the lab's prefix).
    """
    from baomi.lab.lifecycle import down as lab_down

    res = lab_down(name, log=_log)
    click.echo(f"lab {name}: down in {res.seconds:.1f}s"
               + (f" (stopped {', '.join(res.stopped)})" if res.stopped else ""))
