"""`baomi login`, `baomi hosts`, `baomi findings`: the collector's view from a terminal.

    baomi login [--collector https://HOST:PORT] [--ca FILE] [--user U] [--password-stdin]
    baomi hosts [--json]
    baomi findings [--host H] [--clause C] [--severity S] [--since T] [--state S]
                   [--waived yes|no] [--json]

``--json`` prints the collector's own JSON (for scripts); otherwise a table.  Failures are one
line (:mod:`baomi.controller.session`), exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from baomi.clauses import CLAUSES
from baomi.controller import session as s
from baomi.findings import SEVERITY_RANK
from baomi.policy import PolicyError, default_policy_path
from baomi.policy import load as load_policy
from baomi.ui import EXIT_USAGE, console, fail, json_option, print_json

F = TypeVar("F", bound=Callable[..., Any])


def one_line(func: F) -> F:
    """A :class:`SessionError` ends the command with its line (exit 1)."""
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except s.SessionError as exc:
            fail(f"baomi: {exc}", 1)
    return wrapper  # type: ignore[return-value]


def _cell(value: object) -> str:
    """A table cell from the collector: what hosts reported is not trusted, so no markup and
    no control characters (a terminal escape sequence in a "found" field is shown, not run)."""
    return escape("".join(ch if ch.isprintable() else "?" for ch in str(value)))


def _default_url() -> str:
    """The previous session's collector, else the policy's ``collector.url``."""
    try:
        return s.load().url
    except s.SessionError:
        pass
    try:
        return load_policy(default_policy_path()).collector.url
    except (PolicyError, OSError):
        raise s.SessionError("give --collector https://HOST:PORT (no earlier session, and "
                             "no readable policy names collector.url)") from None


@click.command("login")
@click.option("--collector", "url", default=None,
              help="https://HOST:PORT (default: the last session's, else the policy's).")
@click.option("--ca", default=None,
              help="The collector's CA certificate to pin (default: the one deploy fetched).")
@click.option("--user", default=None, help="User name (asked when not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@one_line
def login_cmd(url: str | None, ca: str | None, user: str | None, password_stdin: bool) -> None:
    """Log in to the collector; the session is kept 0600 for hosts and findings."""
    url = url or _default_url()
    s.split_url(url)
    ca_path = s.choose_ca(ca)
    user = user or click.prompt("user")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True)
    if not password:
        fail("baomi login: empty password", EXIT_USAGE)
    session = s.login(url, ca_path, user, password)
    path = s.save(session)
    click.echo(f"logged in to {url} as {session.user} (role {session.role}) until "
               f"{session.expires}; session in {path}")


@click.command("hosts")
@json_option
@one_line
def hosts_cmd(as_json: bool) -> None:
    """Hosts the collector knows: agent state, last seen, open findings by severity."""
    session = s.load()
    body = s.get(session, "/api/v1/hosts")
    if as_json:
        print_json(body)
        return
    table = Table(title=f"hosts at {session.url}")
    for column in ("host", "agent", "last seen", "acked seq", "missing", "open c/h/m/l/i",
                   "acknowledged", "waived", "resolved"):
        table.add_column(column)
    for h in body["hosts"]:
        open_ = h.get("open") or {}
        counts = "/".join(str(open_.get(k, 0))
                          for k in ("critical", "high", "medium", "low", "info"))
        table.add_row(*map(_cell, (h["host"], h.get("agent_state") or "—",
                                   h.get("last_seen") or "—", h.get("acked_seq", "—"),
                                   h.get("missing", "—"), counts, h.get("acknowledged", 0),
                                   h.get("waived", 0), h.get("resolved", 0))))
    console.print(table)
    click.echo(f"{len(body['hosts'])} hosts")


def _waiver(finding: dict[str, Any]) -> str:
    """What the waivers say about a finding (the collector decides it for today)."""
    w = finding.get("waiver")
    if not w:
        return ""
    if finding.get("waived"):
        return f"waived by {w.get('approver')} until {w.get('expires')}"
    return f"waiver expired on {w.get('expires')} ({w.get('approver')}): not waived"


def _clause(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and value not in CLAUSES:
        raise click.BadParameter(f"{value!r} is not a clause ID ({', '.join(CLAUSES)})")
    return value


@click.command("findings")
@click.option("--host", default=None, help="Only this host.")
@click.option("--clause", default=None, callback=_clause, help="Only findings citing it (R-USB).")
@click.option("--severity", type=click.Choice(list(SEVERITY_RANK)), default=None,
              help="At least this severity.")
@click.option("--since", default=None, help="Seen since: 30m, 24h, 7d or a date/time.")
@click.option("--state", type=click.Choice(["open", "acknowledged", "resolved"]), default=None,
              help="Only findings in this state (default: all).")
@click.option("--waived", type=click.Choice(["yes", "no"]), default=None,
              help="Only findings the policy's waivers waive today (yes) or not (no).")
@json_option
@one_line
def findings_cmd(host: str | None, clause: str | None, severity: str | None, since: str | None,
                 state: str | None, waived: str | None, as_json: bool) -> None:
    """Findings the collector holds, newest evidence per host, check and subject.

    A failing finding shows what the policy's waivers say today (waived by X until D, or
    expired)."""
    query = {k: v for k, v in (("host", host), ("clause", clause), ("severity", severity),
                               ("state", state)) if v}
    if waived:
        query["waived"] = "true" if waived == "yes" else "false"
    if since:
        try:
            query["since"] = s.since(since, datetime.now(UTC))
        except s.SessionError as exc:
            raise click.BadParameter(str(exc).split(": ", 1)[1],
                                     param_hint="--since") from None
    session = s.load()
    found = s.findings(session, query)
    if as_json:
        print_json({"findings": found})
        return
    table = Table(title=f"findings at {session.url}")
    for column in ("id", "host", "check", "clauses", "severity", "state", "waiver", "subject",
                   "expected", "found", "last seen"):
        table.add_column(column)
    for f in found:
        table.add_row(*map(_cell, (f["id"], f["host"], f["check"],
                                   ", ".join(f.get("clauses", [])), f["severity"], f["state"],
                                   _waiver(f), f["subject"], f["expected"], f["found"],
                                   f.get("last_seen") or "—")))
    console.print(table)
    click.echo(f"{len(found)} findings")
