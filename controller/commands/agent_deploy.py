"""`baomi agent-deploy -i INVENTORY [--collector HOST]`: install and enrol the resident agent.

Its own command, like `baomi collector-deploy`, rather than part of `baomi apply`: enrolling
needs a one-time token that only a person with role `it` may ask the collector for, so the
command needs the session of `baomi login` (a baseline run should not), and the agent is a
service with a life of its own.  Steps:

1. the targets: every inventory host outside group `collector` (or `--limit`);
2. the collector whose CA the agents pin: `--collector HOST`, by default the inventory's only
   host of group `collector`; its CA is the one `baomi collector-deploy` fetched, and the
   session must pin that same CA (otherwise the tokens would come from another collector);
3. one one-time enrolment token per target, bound to its host name, valid an hour, made
   through the API with the session; they go to the deploy in a 0600 file
   (``deploy/agent.py`` uses a host's token only when that host is not enrolled yet);
4. after the run, every token made is revoked, so none outlives the command (a spent one is
   already useless; an unused one would otherwise stay valid for the hour).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from baomi.controller import session as s
from baomi.controller.commands.apply import print_apply
from baomi.controller.runner import DEPLOYS, run
from baomi.controls import agent as core
from baomi.controls.collector import pinned_ca_path
from baomi.policy import default_policy_path
from baomi.ui import (
    fail,
    inventory_groups_or_exit,
    json_option,
    load_policy_or_exit,
    policy_option,
    print_json,
)

DEPLOY_FILE = DEPLOYS / "agent.py"
TOKEN_SECONDS = 3600


def _collector(hosts: dict[str, set[str]], given: str | None, inventory: str) -> str:
    collectors = sorted(h for h, groups in hosts.items() if core.COLLECTOR_GROUP in groups)
    if given:
        return given
    if len(collectors) != 1:
        fail(f"{inventory}: give --collector HOST ({len(collectors)} hosts in group "
             f"{core.COLLECTOR_GROUP!r}: {', '.join(collectors) or 'none'})")
    return collectors[0]


def _session_for(collector: str) -> s.Session:
    """The `baomi login` session, which must pin the CA of COLLECTOR."""
    pinned = pinned_ca_path(collector)
    if not pinned.is_file():
        fail(f"{pinned}: no CA pinned for collector {collector} (run baomi collector-deploy)")
    try:
        session = s.load()
        same = Path(session.ca).read_bytes() == pinned.read_bytes()
    except s.SessionError as exc:
        fail(f"baomi: {exc}", 1)
    except OSError as exc:
        fail(f"the session's CA file: {exc}", 1)
    if not same:
        fail(f"the session ({session.url}) pins {session.ca}, not the CA of collector "
             f"{collector} ({pinned}): run baomi login --collector URL --ca {pinned}", 1)
    return session


def _made(session: s.Session, host: str) -> tuple[int, str]:
    answer = s.call(session.url, session.ca, "POST", "/api/v1/enrolment-tokens",
                    {"host": host, "one_time": True, "expires_in": TOKEN_SECONDS},
                    token=session.token)
    if answer.status == 401:
        raise s.SessionError(f"the session of {session.user} at {session.url} has expired: "
                             "run baomi login")
    if answer.status == 403:
        raise s.SessionError(f"{session.user} (role {session.role}) may not make enrolment "
                             "tokens (403): an `it` user must run the deploy")
    body = answer.body
    if answer.status != 201 or not isinstance(body, dict) or "token" not in body:
        raise s.SessionError(f"{session.url}: enrolment token for {host} refused "
                             f"({answer.status} {str(body)[:200]})")
    return int(body["id"]), str(body["token"])


@click.command("agent-deploy")
@click.option("-i", "--inventory", required=True, help="pyinfra inventory of the fleet.")
@click.option("--collector", "collector", default=None,
              help="The inventory host of the collector the agents enrol with (default: the "
                   "only host of group `collector`).")
@policy_option
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option("--limit", multiple=True, help="Only these hosts (repeatable).")
@json_option
def agent_deploy(inventory: str, collector: str | None, policy_path: str | None, dry: bool,
                 limit: tuple[str, ...], as_json: bool) -> None:
    """Install the resident agent on the inventory's hosts and enrol it with the collector."""
    path = policy_path or default_policy_path()
    load_policy_or_exit(path, as_json=as_json)
    hosts = inventory_groups_or_exit(inventory)
    name = _collector(hosts, collector, inventory)
    names = [h for h, groups in hosts.items() if core.COLLECTOR_GROUP not in groups
             and (not limit or h in limit)]
    if not names:
        fail(f"{inventory}: no host outside group {core.COLLECTOR_GROUP!r}"
             + (f" matches --limit {', '.join(limit)}" if limit else ""))
    session = _session_for(name)
    made: list[int] = []
    try:
        with tempfile.TemporaryDirectory(prefix="baomi-agent-tokens-") as folder:
            tokens = Path(folder) / "tokens.json"  # the folder is 0700: mkdtemp
            fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            # A dry run makes no token: the deploy only shows that it would enrol.
            by_host = dict.fromkeys(names, "(dry run)") if dry else {}
            try:
                for h in ([] if dry else names):
                    token_id, by_host[h] = _made(session, h)
                    made.append(token_id)
            except s.SessionError as exc:
                fail(f"baomi: {exc}", 1)
            finally:
                with os.fdopen(fd, "w") as fh:
                    json.dump(by_host, fh)
            result = run(inventory, path, dry=dry, limit=names, known_hosts=names,
                         deploy_file=DEPLOY_FILE,
                         extra_env={"BAOMI_AGENT_DEPLOY": "1", "BAOMI_AGENT_COLLECTOR": name,
                                    "BAOMI_AGENT_TOKENS": str(tokens)})
    finally:
        for token_id in made:
            # An unrevoked token still expires within TOKEN_SECONDS.
            with contextlib.suppress(s.SessionError):
                s.call(session.url, session.ca, "DELETE",
                       f"/api/v1/enrolment-tokens/{token_id}", token=session.token)
    if as_json:
        print_json(result.as_dict())
    else:
        print_apply(result, "baomi agent-deploy")
    sys.exit(result.exit_code)
