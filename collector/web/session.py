"""Who is looking: the session cookie, CSRF tokens, form bodies, and the role guard.

The session is the API's own (``store.new_session``: a ``bms_`` token whose SHA-256 digest is
in the database, ``session_hours`` long, ended by logout), carried in a cookie that is
``HttpOnly`` (no script reads it), ``Secure`` (HTTPS only), ``SameSite=Strict`` and
``__Host-`` prefixed (no Domain, Path=/).  Every form carries a CSRF token: HMAC-SHA256 of a
fixed label keyed by the raw session token, so it needs no storage, is the same on every
collector behind a load balancer, and changes with each login; the login form, which has no
session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from baomi.collector import credentials, store, throttle
from baomi.collector.config import Config
from baomi.collector.db import Database
from baomi.collector.store import Principal, Unauthorized
from baomi.collector.web.i18n import lang_of

COOKIE = "__Host-baomi_session"
PRE_LOGIN = "__Host-baomi_login"
LANG_COOKIE = "baomi_lang"
MAX_FORM = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class BadForm(Exception):
    """A form body that is too large, malformed, or without a valid CSRF token (400)."""


class NotLoggedIn(Exception):
    """No valid session: the page sends the browser to /login."""


class RoleRefused(Exception):
    """A valid session whose role may not use this page (403)."""


def csrf_token(raw_session: str) -> str:
    return hmac.new(raw_session.encode(), b"baomi dashboard form", hashlib.sha256).hexdigest()


def lang(request: Request) -> str:
    return lang_of(request.cookies.get(LANG_COOKIE))


async def form_of(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (≤ 64 KiB), one value per name."""
    if request.headers.get("content-type", "").split(";")[0].strip() \
            != "application/x-www-form-urlencoded":
        raise BadForm("expected a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadForm("form too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise BadForm("malformed form") from None
    return {k: v[0] for k, v in parsed.items()}


def same_origin(request: Request) -> bool:
    """A browser's Origin header, when sent, must be this site (defence in depth)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


class Sessions:
    """Reads and makes sessions for the pages of one app."""

    def __init__(self, database: Database, config: Config) -> None:
        self.database = database
        self.hours = config.session_hours
        self.limits = throttle.limits_of(config)

    async def principal(self, request: Request, allowed: frozenset[str]) -> Principal:
        """The logged-in person (NotLoggedIn, RoleRefused otherwise)."""
        raw = request.cookies.get(COOKIE, "")
        if not raw.startswith(credentials.SESSION) or len(raw) > 200 or not raw.isascii():
            raise NotLoggedIn()
        try:
            who = await self.database.read(lambda tx: store.authenticate(tx, raw))
        except Unauthorized:
            raise NotLoggedIn() from None
        if who.role not in allowed:
            raise RoleRefused(who.role)
        return who

    async def posted(self, request: Request, allowed: frozenset[str],
                     ) -> tuple[Principal, dict[str, str]]:
        """The person and the form of a POST whose CSRF token and origin are right."""
        who = await self.principal(request, allowed)
        data = await form_of(request)
        expected = csrf_token(request.cookies.get(COOKIE, ""))
        if not same_origin(request) or not hmac.compare_digest(data.get("csrf", ""), expected):
            raise BadForm("CSRF token missing or wrong")
        return who, data

    async def login(self, user: str, password: str, address: str) -> str | None:
        """A new session token for a right user and password, else None; throttled exactly
        like ``POST /api/v1/login`` (:func:`throttle.attempt`: one counter per user and per
        address, so a guesser gains nothing by using this form; Locked when locked out)."""
        if len(password) > 1024 or len(user) > 64:
            return None
        role = await throttle.attempt(self.database, self.limits, user, password, address)
        if role is None:
            return None
        made = await self.database.write(
            lambda tx: store.new_session(tx, user, role, self.hours))
        return str(made["token"])

    async def logout(self, request: Request) -> None:
        raw = request.cookies.get(COOKIE, "")
        try:
            who = await self.database.read(lambda tx: store.authenticate(tx, raw))
        except Unauthorized:
            return
        await self.database.write(lambda tx: store.end_session(tx, who))

    def set_session(self, response: Response, token: str) -> None:
        response.set_cookie(COOKIE, token, max_age=int(self.hours * 3600), path="/",
                            secure=True, httponly=True, samesite="strict")


def new_pre_login() -> str:
    return secrets.token_urlsafe(32)


def set_pre_login(response: Response, value: str) -> None:
    response.set_cookie(PRE_LOGIN, value, max_age=3600, path="/", secure=True, httponly=True,
                        samesite="strict")
