"""The collector's folder: ``collector.toml``, the TLS files, the metrics token.

``baomi collector init DIR`` writes it; ``serve`` reads it. Every file is 0600 (the CA
certificate too: clients get their copy from the operator, not from this folder).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG = "collector.toml"


class ConfigError(Exception):
    """A one-line problem with the collector's folder or its configuration."""


@dataclass(frozen=True)
class Config:
    folder: Path
    listen: str = "0.0.0.0:8443"
    database: str = ""
    session_hours: float = 8.0
    max_body_bytes: int = 4 * 1024 * 1024
    rate_per_second: float = 50.0
    rate_burst: int = 100
    sqlite_synchronous: str = "FULL"
    db_pool: int = 8
    admin_user: str = "admin"
    admin_password_scrypt: str = ""
    # HR's offboarding from the dashboard (collector/web/offboard.py): the fleet's pyinfra
    # inventory ("" = the offboarding page says it is not configured), the policy, the folder
    # of `baomi offboard`'s ledger, and the UTC hour of the daily `--purge-due` run.
    offboard_inventory: str = ""
    offboard_policy: str = ""
    offboard_state: str = ""
    purge_hour: int = 3
    # Waivers on findings (collector/waiving.py): the policy whose waivers apply ("" = none;
    # `serve --policy FILE` or BAOMI_COLLECTOR_POLICY sets it). Hosts' groups come from
    # waiver_groups (a JSON map host → [group, ...]; BAOMI_COLLECTOR_GROUPS, the deploy's
    # copy) when set, else from offboard_inventory when set, else none (host names only).
    policy: str = ""
    waiver_groups: str = ""
    # Alerts (R-INC, collector/alerts.py); `serve --policy FILE` takes them from the policy.
    alert_min_severity: str = "critical"
    alert_webhook: str = ""  # "" = none; the URL may carry a token: this file is 0600
    alert_syslog_socket: str = "/dev/log"  # "" = no syslog line
    agent_silent_minutes: float = 30.0
    agent_silent_severity: str = "high"
    alert_retry_max_seconds: float = 300.0
    # Login throttling (collector/throttle.py), shared by every process on the database.
    login_max_failures_per_user: int = 5
    login_max_failures_per_address: int = 20
    login_lockout_seconds: float = 900.0

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def metrics_token(self) -> Path:
        return self.folder / "metrics.token"


_TYPES: dict[str, type | tuple[type, ...]] = {
    "listen": str, "database": str, "session_hours": (int, float), "max_body_bytes": int,
    "rate_per_second": (int, float), "rate_burst": int, "sqlite_synchronous": str,
    "db_pool": int, "admin_user": str, "admin_password_scrypt": str,
    "offboard_inventory": str, "offboard_policy": str, "offboard_state": str, "purge_hour": int,
    "policy": str, "waiver_groups": str,
    "alert_min_severity": str, "alert_webhook": str, "alert_syslog_socket": str,
    "agent_silent_minutes": (int, float), "agent_silent_severity": str,
    "alert_retry_max_seconds": (int, float), "login_max_failures_per_user": int,
    "login_max_failures_per_address": int, "login_lockout_seconds": (int, float),
}


def split_listen(value: str, where: str) -> tuple[str, int]:
    """``ADDR:PORT`` → (addr, port); ``[::1]:8443`` for IPv6."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not ADDR:PORT")
    return host.strip("[]"), int(port)


def render(values: dict[str, Any]) -> str:
    """The TOML text of a flat config (strings and numbers only)."""
    lines = ["# baomi collector; see docs/collector.md", ""]
    for key, value in values.items():
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def load(folder: Path) -> Config:
    """Read ``folder/collector.toml``; ConfigError names the file and the key."""
    path = folder / CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run `baomi collector init {folder}` first)"
                          ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        expected = _TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: unknown key {key!r}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} has the wrong type")
        values[key] = value
    config = Config(folder=folder, **values)
    split_listen(config.listen, f"{path}: listen")
    if config.sqlite_synchronous not in ("FULL", "NORMAL"):
        raise ConfigError(f"{path}: sqlite_synchronous must be FULL or NORMAL")
    if config.max_body_bytes < 1024 or config.rate_per_second <= 0 or config.rate_burst < 1 \
            or config.session_hours <= 0 or config.db_pool < 1:
        raise ConfigError(f"{path}: limits must be positive (max_body_bytes ≥ 1024)")
    if not 0 <= config.purge_hour <= 23:
        raise ConfigError(f"{path}: purge_hour must be an hour 0…23 (UTC)")
    alert_problem(config, str(path))
    return config


def alert_problem(config: Config, where: str) -> None:
    """ConfigError naming ``where`` and the key when an alert or login setting is wrong."""
    from baomi.findings import SEVERITY_RANK

    for key in ("alert_min_severity", "agent_silent_severity"):
        if getattr(config, key) not in SEVERITY_RANK:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(SEVERITY_RANK)}")
    hook = config.alert_webhook
    if hook and not (hook.startswith("https://") or hook.startswith(
            ("http://127.", "http://localhost", "http://[::1]"))):
        raise ConfigError(f"{where}: alert_webhook {hook[:60]!r}: https:// only "
                          "(plain http:// only to this host)")
    if config.alert_syslog_socket and not config.alert_syslog_socket.startswith("/"):
        raise ConfigError(f"{where}: alert_syslog_socket must be an absolute path or \"\"")
    if config.agent_silent_minutes <= 0 or config.alert_retry_max_seconds < 1 \
            or config.login_max_failures_per_user < 1 \
            or config.login_max_failures_per_address < 1 or config.login_lockout_seconds < 1:
        raise ConfigError(f"{where}: alert and login limits must be positive")
