"""``baomi collector init|serve|backup``: make the collector's folder, run it, copy its data."""

from __future__ import annotations

import os
from pathlib import Path

import click

from baomi.collector.config import Config, ConfigError, load
from baomi.collector.records_cli import import_cmd, verify_log_cmd
from baomi.collector.service_session import service_session_cmd


def _load(folder: str) -> Config:
    try:
        return load(Path(folder))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def collector() -> None:
    """The central collector: where every host's findings end up."""


collector.add_command(import_cmd)      # the system of record (collector/records_cli.py)
collector.add_command(verify_log_cmd)
collector.add_command(service_session_cmd)  # the regular audit's upload (service_session.py)


@collector.command("init")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True,
              help="DNS name clients use for the collector (repeatable).")
@click.option("--address", "addresses", multiple=True,
              help="IP address clients use for the collector (repeatable).")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, help="ADDR:PORT to serve.")
@click.option("--db", "database", default=None, envvar="BAOMI_COLLECTOR_DB",
              help="Database URL (default: sqlite:///FOLDER/collector.db; or the environment's "
                   "BAOMI_COLLECTOR_DB, which keeps a password off the command line).")
@click.option("--admin", "admin_user", default="admin", show_default=True,
              help="Name of the first `it` user.")
def init_cmd(folder: str, names: tuple[str, ...], addresses: tuple[str, ...], listen: str,
             database: str | None, admin_user: str) -> None:
    """Make FOLDER: configuration, a private CA and server certificate, the first admin.

    The admin's password is printed once, here; it is stored only as a scrypt digest.
    """
    import secrets

    from baomi.collector import credentials
    from baomi.collector.config import CONFIG, render, split_listen
    from baomi.collector.db import dialect_of
    from baomi.collector.tls import check_address, make_ca_and_server, write_private
    from baomi.collector.validate import HOST, USER

    path = Path(folder).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise click.ClickException(f"{path}: exists and is not an empty folder; "
                                   "choose a new one")
    try:
        split_listen(listen, "--listen")
        ips = [check_address(a) for a in addresses]
        url = database or f"sqlite:///{path}/collector.db"
        dialect_of(url)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for name in names:
        if not HOST.fullmatch(name):
            raise click.BadParameter(f"{name!r} is not a DNS name", param_hint="--name")
    if not USER.fullmatch(admin_user):
        raise click.BadParameter(f"{admin_user!r} is not a user name", param_hint="--admin")
    password = secrets.token_urlsafe(18)
    files = make_ca_and_server(list(names), ips)
    files["metrics.token"] = (credentials.new_token(credentials.METRICS) + "\n").encode()
    files[CONFIG] = render({
        "listen": listen, "database": url, "session_hours": 8,
        "max_body_bytes": 4 * 1024 * 1024, "rate_per_second": 50, "rate_burst": 100,
        "sqlite_synchronous": "FULL", "db_pool": 8, "admin_user": admin_user,
        "admin_password_scrypt": credentials.hash_password(password),
        "alert_min_severity": "critical", "alert_webhook": "",
        "alert_syslog_socket": "/dev/log", "agent_silent_minutes": 30,
        "agent_silent_severity": "high", "alert_retry_max_seconds": 300,
        "login_max_failures_per_user": 5, "login_max_failures_per_address": 20,
        "login_lockout_seconds": 900, "policy": ""}).encode()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for name, data in files.items():
        write_private(path / name, data)
    click.echo(f"collector folder: {path}")
    click.echo(f"CA for clients to pin: {path / 'ca.pem'}")
    click.echo(f"first admin (role it): {admin_user}")
    click.echo(f"password (shown once): {password}")
    click.echo(f"start it: baomi collector serve {path}")


@collector.command("serve")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--db", "database", default=None, help="Database URL (overrides the config).")
@click.option("--listen", default=None, help="ADDR:PORT (overrides the config).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--policy", "policy_file", default=None, type=click.Path(dir_okay=False),
              help="policy.yaml whose collector section sets the alerts and whose waivers "
                   "apply to findings (over the config).")
def serve_cmd(folder: str, database: str | None, listen: str | None, log_level: str,
              policy_file: str | None) -> None:
    """Serve the API over TLS (uvicorn) until stopped.

    The database URL may also come from the environment (BAOMI_COLLECTOR_DB, e.g. a systemd
    EnvironmentFile): a password on the command line is readable by every local user.
    """
    import dataclasses

    import uvicorn

    from baomi.collector.app import create_app
    from baomi.collector.config import split_listen
    from baomi.collector.db import Database, dialect_of

    config = _load(folder)
    database = database or os.environ.get("BAOMI_COLLECTOR_DB") or None
    if database:
        config = dataclasses.replace(config, database=database)
    if policy_file:
        config = _with_policy(config, Path(policy_file))
    config = _with_environment(config)
    if policy_file:  # the command line wins over BAOMI_COLLECTOR_POLICY and collector.toml
        config = dataclasses.replace(config, policy=str(Path(policy_file).absolute()))
    if listen:
        config = dataclasses.replace(config, listen=listen)
    _check_waivers(config)
    try:
        host, port = split_listen(config.listen, "--listen")
        dialect_of(config.database)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    db = Database(config.database, pool=config.db_pool, synchronous=config.sqlite_synchronous)
    try:
        db.migrate()
    except Exception as exc:  # the one place a bad URL or a down database is reported
        raise click.ClickException(f"database {_redact(config.database)}: "
                                   f"{' '.join(str(exc).split())}") from None
    app = create_app(config, db)
    click.echo(f"baomi collector on https://{host}:{port}/api/v1 "
               f"(database {_redact(config.database)})", err=True)
    uvicorn.run(app, host=host, port=port, ssl_certfile=str(config.cert),
                ssl_keyfile=str(config.key), log_level=log_level, access_log=False,
                server_header=False, timeout_graceful_shutdown=5,
                # uvicorn's default (5 s) equals the agents' heartbeat tick: every heartbeat
                # found its connection closed and paid a new TLS handshake.
                timeout_keep_alive=75)


def _with_policy(config: Config, path: Path) -> Config:
    """``config`` with the alert settings of the policy's collector section."""
    import dataclasses

    from baomi.collector.waiving import one_line
    from baomi.policy import PolicyError, load

    try:
        c = load(path).collector
    except PolicyError as exc:
        raise click.ClickException(one_line(exc)) from None
    return dataclasses.replace(
        config, alert_min_severity=c.alert_min_severity, alert_webhook=c.alert_webhook or "",
        alert_syslog_socket=config.alert_syslog_socket if c.alert_syslog else "",
        agent_silent_minutes=float(c.agent_silent_minutes),
        agent_silent_severity=c.agent_silent_severity)


def _check_waivers(config: Config) -> None:
    """The policy (and groups map or inventory) whose waivers apply to findings load, or one
    line."""
    from baomi.collector.waiving import WaiverError, Waivers

    try:
        Waivers(config.policy, config.offboard_inventory, config.waiver_groups).check()
    except WaiverError as exc:
        raise click.ClickException(str(exc)) from None


def _with_environment(config: Config) -> Config:
    """``config`` with the alert settings the deploy put in the service's environment file
    (BAOMI_ALERT_*, BAOMI_AGENT_SILENT_*: the policy's, as ``collector-deploy`` wrote them)."""
    import dataclasses

    from baomi.collector.config import alert_problem

    env = os.environ
    changes: dict[str, object] = {}
    for name, key in (("BAOMI_ALERT_MIN_SEVERITY", "alert_min_severity"),
                      ("BAOMI_ALERT_WEBHOOK", "alert_webhook"),
                      ("BAOMI_AGENT_SILENT_SEVERITY", "agent_silent_severity")):
        if name in env:
            changes[key] = env[name]
    if env.get("BAOMI_COLLECTOR_POLICY"):  # the deploy's copy: its waivers apply to findings
        changes["policy"] = env["BAOMI_COLLECTOR_POLICY"]
    if env.get("BAOMI_COLLECTOR_GROUPS"):  # the deploy's host → groups map, for those waivers
        changes["waiver_groups"] = env["BAOMI_COLLECTOR_GROUPS"]
    if env.get("BAOMI_ALERT_SYSLOG") == "0":
        changes["alert_syslog_socket"] = ""
    if "BAOMI_AGENT_SILENT_MINUTES" in env:
        try:
            changes["agent_silent_minutes"] = float(env["BAOMI_AGENT_SILENT_MINUTES"])
        except ValueError:
            raise click.ClickException("BAOMI_AGENT_SILENT_MINUTES: not a number") from None
    if not changes:
        return config
    config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    try:
        alert_problem(config, "the service's environment (BAOMI_ALERT_*)")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return config


def _redact(url: str) -> str:
    """A database URL without its password (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@collector.command("backup")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--db", "database", default=None, help="Database URL (overrides the config).")
def backup_cmd(folder: str, out: str, database: str | None) -> None:
    """A consistent online copy of the database to OUT (SQLite backup API, or pg_dump)."""
    from baomi.collector.db import backup

    config = _load(folder)
    try:
        backup(database or config.database, Path(out))
    except (OSError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backup written: {out}")
