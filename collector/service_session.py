"""``baomi collector service-session``: a session of the collector itself for a run of ``baomi``
on the collector host that must talk to this collector (the regular audit's ``--upload``).

The same mechanism as HR's offboarding runs (``collector/web/offboard.py``,
``records_session``): :func:`store.new_session` makes a session under a service name (here
``collector (audit)``, role ``auditor``: uploading an audit needs no more), written with
:func:`write_child_session` as a ``session.json`` exactly like ``baomi login``'s, 0600 in a
0700 folder of the run; ``--end`` ends it in the database and removes the file.  The token is
made on the collector and never typed, printed or put on a command line.  The login and the
logout are lines of the hash-chained log under the service name.

Run as root by ``baomi-audit.service`` (its state folder is root's), but the database part runs
as the owner of the collector's folder (a forked child that drops to that user): an SQLite
journal root made there would be unreadable to the service.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from baomi.collector import credentials, store
from baomi.collector.store import Principal

SESSION_FILE = "session.json"


def _as_owner(folder: Path, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()`` as the owner of FOLDER when we are root and it is not: in a child that drops
    to that user and returns the JSON answer through a pipe."""
    info = os.stat(folder)
    if os.geteuid() != 0 or info.st_uid == 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the owner's identity, then the database work
        os.close(read_end)
        code = 0
        try:
            os.setgroups([])
            os.setgid(info.st_gid)
            os.setuid(info.st_uid)
            answer = fn()
        except click.ClickException as exc:
            answer, code = {"error": exc.message}, 1
        except Exception as exc:  # reported by the parent as one line
            answer, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        with os.fdopen(write_end, "w") as out:
            json.dump(answer, out)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as got:
        text = got.read()
    os.waitpid(pid, 0)
    try:
        got_answer: dict[str, Any] = json.loads(text)
    except ValueError:
        raise click.ClickException("the database step ended without an answer") from None
    if "error" in got_answer:
        raise click.ClickException(str(got_answer["error"]))
    return got_answer


def _in_database(folder: Path, database: str | None, work: Callable[[Any], Any]) -> Any:
    from baomi.collector.config import ConfigError, load
    from baomi.collector.db import Database, DatabaseUnavailable, Refused

    try:
        url = database or os.environ.get("BAOMI_COLLECTOR_DB") or load(folder).database
        db = Database(url, pool=1)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        return db.transaction(work)
    except (DatabaseUnavailable, Refused) as exc:
        raise click.ClickException(f"the collector's database: {exc}") from None
    finally:
        db.close()


@click.command("service-session")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--state", "state", required=True, type=click.Path(file_okay=False),
              help="The run's state folder (BAOMI_STATE_DIR): session.json goes there, 0600.")
@click.option("--name", default="collector (audit)", show_default=True,
              help="Who the session is, in the log of human actions.")
@click.option("--role", default="auditor", show_default=True,
              type=click.Choice(["auditor", "it"]))
@click.option("--hours", default=3.0, show_default=True, type=click.FloatRange(0.1, 24))
@click.option("--url", default=None, help="How the run reaches this collector "
              "(default https://localhost:PORT of collector.toml's listen).")
@click.option("--ca", "ca", default=None, help="The CA file the run pins (default the "
              "folder's ca.pem).")
@click.option("--db", "database", default=None, help="Database URL (overrides the config).")
@click.option("--end", is_flag=True, help="End the session of --state's session.json and "
              "remove the file.")
def service_session_cmd(folder: str, state: str, name: str, role: str, hours: float,
                        url: str | None, ca: str | None, database: str | None,
                        end: bool) -> None:
    """Make (or --end) a session of the collector itself for a run on this host."""
    from baomi.collector.config import ConfigError, load, split_listen
    from baomi.collector.web.offboard_core import write_child_session

    where = Path(folder)
    target = Path(state) / SESSION_FILE
    if end:
        try:
            token = str(json.loads(target.read_text(encoding="utf-8"))["token"])
        except FileNotFoundError:
            click.echo(f"{target}: no session to end")
            return
        except (OSError, ValueError, KeyError) as exc:
            target.unlink(missing_ok=True)
            raise click.ClickException(f"{target}: not a session file ({exc}); removed") \
                from None
        target.unlink()
        _as_owner(where, lambda: _in_database(where, database, lambda tx: store.end_session(
            tx, Principal(role, name, token=credentials.digest(token)))) or {})
        click.echo(f"session of {name!r} ended")
        return
    try:
        config = load(where)
        _host, port = split_listen(config.listen, "collector.toml listen")
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    made = _as_owner(where, lambda: _in_database(
        where, database, lambda tx: store.new_session(tx, name, role, hours)))
    path = write_child_session(Path(state), url or f"https://localhost:{port}",
                               str(Path(ca).absolute()) if ca else str(config.ca), made)
    click.echo(f"session of {name!r} ({role}) until {made['expires']} in {path}",
               file=sys.stdout)
