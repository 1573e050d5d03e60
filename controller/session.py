"""The terminal's side of the collector: a stored session and one-line answers to failures.

``baomi login`` keeps ``{url, ca, user, role, expires, token}`` in ``session.json`` (0600, in a
0700 folder: ``$BAOMI_STATE_DIR`` when set, else ``~/.config/baomi``); ``baomi hosts`` and
``baomi findings`` send the token over TLS verified against the pinned CA file (stdlib
``http.client`` through :class:`baomi.collector.client.Client`; no new dependency).  Every
failure becomes :class:`SessionError` with one line: unreachable, a certificate the pinned CA
did not issue, 401 ("run baomi login"), 403 (the role), or the collector's own message.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from baomi.collector.client import Answer, Client
from baomi.controls.collector import pinned_ca_path

SESSION_FILE = "session.json"


class SessionError(Exception):
    """One line for the terminal: what failed and what to do."""


@dataclass(frozen=True)
class Session:
    url: str
    ca: str
    user: str
    role: str
    expires: str
    token: str


def session_dir() -> Path:
    """``$BAOMI_STATE_DIR`` when set (the controller's records), else ``~/.config/baomi``."""
    env = os.environ.get("BAOMI_STATE_DIR")
    return Path(env) if env else Path.home() / ".config" / "baomi"


def session_path() -> Path:
    return session_dir() / SESSION_FILE


def split_url(url: str) -> tuple[str, int]:
    """``https://HOST[:PORT]`` → (host, port); anything else is refused (TLS only, R-TLS)."""
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        raise SessionError(f"--collector {url!r}: the port is not a number") from None
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise SessionError(f"--collector {url!r}: expected https://HOST:PORT "
                           "(the collector speaks TLS only)")
    return parts.hostname, port


def pinned_cas() -> list[Path]:
    """CA certificates ``baomi collector-deploy`` fetched (one per collector host)."""
    return sorted(pinned_ca_path("*").parent.parent.glob("*/ca.pem"))


def choose_ca(given: str | None) -> Path:
    """The CA file to pin: --ca, else the only one the deploy fetched."""
    if given:
        path = Path(given).absolute()
        if not path.is_file():
            raise SessionError(f"--ca {given}: no such file")
        return path
    found = pinned_cas()
    if len(found) == 1:
        return found[0]
    where = pinned_ca_path("*").parent.parent
    raise SessionError("give --ca FILE (the collector's CA certificate): "
                       + (f"{len(found)} pinned in {where}" if found
                          else f"none pinned in {where} (baomi collector-deploy fetches it)"))


def save(session: Session) -> Path:
    """Write the session 0600 (folder 0700), atomically; never through a link."""
    folder = session_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise SessionError(f"{folder}: not a directory (a link?); the session is not written")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".session-", dir=folder)  # mkstemp makes it 0600
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(session), fh)
        fh.write("\n")
    os.replace(tmp, folder / SESSION_FILE)
    return folder / SESSION_FILE


def load() -> Session:
    path = session_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Session(**{k: str(data[k]) for k in Session.__dataclass_fields__})
    except FileNotFoundError:
        raise SessionError(f"not logged in ({path} does not exist): run baomi login") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise SessionError(f"{path}: damaged session file: run baomi login") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not one the pinned CA issued ({exc.verify_message})"
    return " ".join(str(exc).split()) or type(exc).__name__


def call(url: str, ca: Path | str, method: str, path: str, body: Any = None,
         token: str | None = None, timeout: float = 15.0) -> Answer:
    """One request; connection and TLS failures become one line naming the collector."""
    host, port = split_url(url)
    try:
        client = Client(host, port, str(ca), token=token, timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        raise SessionError(f"CA file {ca}: not a usable certificate ({_describe(exc)})") from None
    try:
        return client.request(method, path, body)
    except (OSError, ssl.SSLError) as exc:
        raise SessionError(f"cannot reach the collector at {url}: {_describe(exc)}") from None
    finally:
        client.close()


def _error(answer: Answer) -> str:
    body = answer.body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return " ".join(body["error"].split())[:300]
    return f"HTTP {answer.status}"


def login(url: str, ca: Path, user: str, password: str) -> Session:
    answer = call(url, ca, "POST", "/api/v1/login", {"user": user, "password": password})
    if answer.status == 401:
        raise SessionError(f"login refused by {url}: wrong user or password")
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise SessionError(f"login at {url} failed: {_error(answer)}")
    b = answer.body
    return Session(url, str(ca), str(b["user"]), str(b["role"]), str(b["expires"]),
                   str(b["token"]))


def get(session: Session, path: str, query: dict[str, str] | None = None) -> Any:
    """GET with the session; 401/403/other errors as one line saying what to do."""
    full = path + (f"?{urlencode(query)}" if query else "")
    answer = call(session.url, session.ca, "GET", full, token=session.token)
    if answer.status == 401:
        raise SessionError(f"the session of {session.user} at {session.url} has expired or "
                           "was ended: run baomi login")
    if answer.status == 403:
        raise SessionError(f"{session.user} (role {session.role}) may not read {path} (403)")
    if answer.status != 200:
        raise SessionError(f"{session.url}{path}: {_error(answer)} ({answer.status})")
    return answer.body


def findings(session: Session, query: dict[str, str], page: int = 500) -> list[dict[str, Any]]:
    """Every finding matching QUERY, following the collector's pages."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        q = dict(query, limit=str(page), **({"after": after} if after else {}))
        body = get(session, "/api/v1/findings", q)
        out += body["findings"]
        if body.get("next") is None:
            return out
        after = str(body["next"])


_RELATIVE = re.compile(r"(?P<n>\d+)(?P<unit>[mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since(value: str, now: datetime) -> str:
    """``--since``: ``30m``, ``24h``, ``7d``, ``2w`` before NOW, or a date/time (UTC if no
    zone) → an RFC 3339 time for the API."""
    m = _RELATIVE.fullmatch(value.strip())
    if m:
        return (now - timedelta(**{_UNITS[m["unit"]]: int(m["n"])})).isoformat()
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SessionError(f"--since {value!r}: expected 30m, 24h, 7d, 2w or a date/time "
                           "like 2026-12-01 or 2026-12-01T08:00:00+08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()
