"""``baomi agent``: enroll, run, status, scan --once (registered lazily by baomi/cli.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import click

from baomi.agent.config import (
    AgentConfigError,
    Enrolment,
    load_enrolment,
    save_enrolment,
)
from baomi.agent.config import state_dir as agent_dir
from baomi.ui import fail, json_option, load_policy_or_exit, policy_option, print_json

state_option = click.option("--state-dir", default=None,
                            help="The agent's folder (default: $BAOMI_AGENT_DIR or "
                                 "/var/lib/baomi-agent).")


@click.group()
def agent() -> None:
    """The resident agent (R-FIM, R-LOG): baseline, real-time watch, findings to the collector."""


def _enrolment(directory: Path) -> Enrolment | None:
    try:
        return load_enrolment(directory)
    except AgentConfigError as exc:
        fail(str(exc))


def running_pid(directory: Path) -> int | None:
    """The pid of the agent running on this state folder, if any."""
    try:
        pid = int((directory / "agent.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@agent.command()
@click.option("--collector", "url", required=True, help="https://HOST:PORT of the collector.")
@click.option("--token", required=True, envvar="BAOMI_ENROL_TOKEN",
              help="An enrolment token (bme_…) from the collector (or $BAOMI_ENROL_TOKEN: "
                   "not on a command line other users of the host can read).")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False),
              help="The collector's CA certificate (its ca.pem); the only CA trusted.")
@click.option("--host", default=None, help="This host's name (default: the system's).")
@click.option("--group", "groups", multiple=True,
              help="Inventory group of this host (repeatable): which sensitive paths apply.")
@policy_option
@state_option
def enroll(url: str, token: str, ca_file: str | None, host: str | None,
           groups: tuple[str, ...], policy_path: str | None, state_dir: str | None) -> None:
    """Enrol with the collector; the credential is stored 0600 in the agent's folder."""
    from baomi.agent.ship import Client, CollectorError
    from baomi.agent.ship import enroll as do_enroll

    directory = agent_dir(state_dir)
    policy = load_policy_or_exit(policy_path)
    try:
        Client(url, None)
    except ValueError as exc:
        fail(f"--collector: {exc}")
    if running_pid(directory):
        fail(f"the agent is running on {directory}: stop it before enrolling again")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stored_ca = None
    if ca_file:
        stored_ca = str(directory / "collector-ca.pem")
        shutil.copyfile(ca_file, stored_ca)
    name = host or socket.gethostname()
    try:
        answer = do_enroll(url, token, name, stored_ca)
    except CollectorError as exc:
        fail(f"enrolment failed: {exc}", 1)
    if _enrolment(directory) is not None:
        # A new credential numbers its events from 1: the old spool cannot be sent any more.
        spool = Path(policy.agent.spool_dir) / "spool.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{spool}{suffix}").unlink(missing_ok=True)
    path = save_enrolment(directory, Enrolment(url, int(answer["agent_id"]), answer["host"],
                                               answer["credential"], stored_ca, groups))
    click.echo(f"enrolled as agent {answer['agent_id']} ({answer['host']}) with {url}; "
               f"credential in {path} (0600)")


@agent.command()
@policy_option
@state_option
@click.option("--group", "groups", multiple=True,
              help="Inventory groups when not enrolled (enrolment's groups otherwise).")
def run(policy_path: str | None, state_dir: str | None, groups: tuple[str, ...]) -> None:
    """Run the agent in the foreground until SIGTERM (the service's command)."""
    from baomi.agent.service import Agent, install_signals

    directory = agent_dir(state_dir)
    policy = load_policy_or_exit(policy_path)
    enrolment = _enrolment(directory)
    other = running_pid(directory)
    if other and other != os.getpid():
        fail(f"the agent already runs on {directory} (pid {other})")
    if enrolment is None:
        click.echo("not enrolled: findings stay in the spool until `baomi agent enroll`",
                   err=True)
    worker = Agent(policy, directory, enrolment, groups)
    install_signals(worker)
    worker.run(ready=lambda: click.echo(f"baomi agent: watching {', '.join(worker.roots)}",
                                        err=True))


@agent.command()
@policy_option
@state_option
@json_option
def status(policy_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Last scan, paths and watches, spool depth, last acknowledged sequence, collector
    reachable, the agent's own RSS and CPU."""
    directory = agent_dir(state_dir)
    enrolment = _enrolment(directory)
    pid = running_pid(directory)
    report: dict[str, Any] = {"running": pid is not None, "pid": pid,
                              "enrolment": enrolment.public() if enrolment else None}
    try:
        report["status"] = json.loads((directory / "status.json").read_text())
    except FileNotFoundError:
        report["status"] = None
    except (OSError, ValueError) as exc:
        fail(f"{directory / 'status.json'}: unreadable ({exc})")
    if pid is not None:
        import psutil

        proc = psutil.Process(pid)
        report["rss_bytes"] = proc.memory_info().rss
        report["cpu_percent"] = proc.cpu_percent(interval=0.5)
    if enrolment is not None and pid is None:
        report["collector_reachable"] = _probe(enrolment)
    elif report["status"] and report["status"].get("collector"):
        report["collector_reachable"] = report["status"]["collector"]["reachable"]
    if as_json:
        print_json(report)
        return
    _print_status(report)


def _probe(e: Enrolment) -> bool:
    """Whether the collector answers its health probe over TLS with the pinned CA."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(e.collector)
    try:
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=5,
                                           context=ssl.create_default_context(cafile=e.ca_file))
        conn.request("GET", parts.path.rstrip("/") + "/api/v1/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False


def _print_status(r: dict[str, Any]) -> None:
    s = r.get("status") or {}
    e = r.get("enrolment")
    click.echo(f"agent: {'running, pid ' + str(r['pid']) if r['running'] else 'not running'}")
    click.echo("enrolled: " + (f"agent {e['agent_id']} ({e['host']}) with {e['collector']}"
                               if e else "no"))
    if not s:
        click.echo("no status yet (the agent has not run)")
        return
    scan = s.get("last_scan") or {}
    if scan:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(scan["at"]))
        click.echo(f"last scan: {when} ({scan['reason']}), {scan['files']} files, "
                   f"{scan['changes']} changes, {scan['seconds']} s")
    click.echo(f"paths: {', '.join(s['paths']) or 'none for this host'}; watched: "
               f"{', '.join(s['watched']) or 'none'}; inotify watches: {s['inotify_watches']}"
               + (f"; POLLING: {s['polling']}" if s.get("polling") else ""))
    sp = s["spool"]
    click.echo(f"spool: {sp['events']} events ({sp['bytes']} bytes), last seq {sp['last_seq']}, "
               f"acknowledged {sp['acked_seq']}, dropped {sp['dropped']}")
    if "collector_reachable" in r:
        c = s.get("collector") or {}
        click.echo(f"collector reachable: {r['collector_reachable']}"
                   + (f" ({c['last_error']})" if c.get("last_error") else ""))
    av = s.get("antivirus_record")
    if av:
        click.echo(f"antivirus record: {av['path']}, read up to byte {av['offset']}")
    rss = r.get("rss_bytes", s.get("rss_bytes", 0))
    click.echo(f"own: RSS {rss / 1048576:.1f} MiB"
               + (f", CPU {r['cpu_percent']:.1f} %" if "cpu_percent" in r else ""))
    for err in s.get("errors") or []:
        click.echo(f"error: {err}")


@agent.command()
@click.option("--once", is_flag=True, required=True, help="Scan now, once, and exit.")
@policy_option
@state_option
@click.option("--group", "groups", multiple=True, help="Inventory groups when not enrolled.")
@json_option
def scan(once: bool, policy_path: str | None, state_dir: str | None,
         groups: tuple[str, ...], as_json: bool) -> None:
    """Scan every sensitive path now.  With the agent running, it is asked to rescan
    (SIGUSR1) and this waits for the result; otherwise this process scans and ships."""
    from baomi.agent.service import Agent

    directory = agent_dir(state_dir)
    policy = load_policy_or_exit(policy_path)
    enrolment = _enrolment(directory)
    pid = running_pid(directory)
    if pid is not None:
        before = _last_scan_at(directory)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 3600
        while _last_scan_at(directory) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        result = json.loads((directory / "status.json").read_text())["last_scan"]
    else:
        worker = Agent(policy, directory, enrolment, groups)
        try:
            worker.scan_all("once")
            result = worker.last_scan
            if worker.shipper is not None:
                result["shipped"] = _ship_now(worker)
            worker.write_status()
        finally:
            worker.close()
    if as_json:
        print_json(result)
    else:
        click.echo(f"scanned {', '.join(result['paths']) or 'nothing'}: {result['files']} files,"
                   f" {result['changes']} changes, {result['errors']} errors, "
                   f"{result['seconds']} s")


def _last_scan_at(directory: Path) -> float | None:
    try:
        scan_ = json.loads((directory / "status.json").read_text()).get("last_scan") or {}
        return scan_.get("at")
    except (OSError, ValueError):
        return None


def _ship_now(worker: Any) -> str:
    """Send the spool once (no background thread): 'ok' or the error line."""
    from baomi.agent.ship import CollectorError

    try:
        while worker.shipper.ship_once():
            pass
    except CollectorError as exc:
        return str(exc)
    return "ok"
