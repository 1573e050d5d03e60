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
    return config
