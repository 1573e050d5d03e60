"""The dashboard's routes: login, logout, the language switch, static files, and every page
behind one guard that checks the session, the role (the matrix below) and, on POST, the form's
CSRF token, and turns every refusal into a page with one line (never a traceback).

Role matrix (enforced here; tests/unit/test_dashboard.py checks every cell):

| page / form                        | it | auditor | hr |
|------------------------------------|----|---------|----|
| GET /fleet, /hosts/H, /clauses/C   | ✓  | ✓       | 403 |
| POST /findings/ID/ack              | ✓  | 403     | 403 |
| GET, POST /escrow                  | ✓  | 403     | 403 |
| GET /offboarding, /offboarding/ID  | ✓  | ✓       | ✓  |
| POST /offboarding                  | ✓  | 403     | ✓  |
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from baomi.collector import throttle
from baomi.collector.config import Config
from baomi.collector.db import Conflict, Database, DatabaseUnavailable
from baomi.collector.store import NotFound
from baomi.collector.validate import Invalid
from baomi.collector.waiving import Waivers
from baomi.collector.web import audits, escrow, fleet, offboard
from baomi.collector.web.html import field, form, join, page, tag
from baomi.collector.web.i18n import LANGS, t
from baomi.collector.web.session import (
    COOKIE,
    LANG_COOKIE,
    PRE_LOGIN,
    SECURITY_HEADERS,
    BadForm,
    NotLoggedIn,
    RoleRefused,
    Sessions,
    csrf_token,
    form_of,
    lang,
    new_pre_login,
    set_pre_login,
)
from baomi.collector.web.view import View

log = logging.getLogger("baomi.collector.web")
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"style.css": "text/css", "progress.js": "text/javascript"}

READERS = frozenset({"it", "auditor"})
IT = frozenset({"it"})
EVERYONE = frozenset({"it", "auditor", "hr"})
OFFBOARDERS = frozenset({"it", "hr"})

Page = Callable[[Database, View, Request, dict[str, str]], Awaitable[Response]]


def safe_next(value: str | None) -> str:
    """A local path to go back to (never another site: ``//host`` and ``/\\host`` refused)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    return value


def message_page(request: Request, status: int, text: str) -> HTMLResponse:
    language = lang(request)
    body = tag("p", text, class_="error", id="message")
    return HTMLResponse(page(language, t(language, "error"), body, here=request.url.path),
                        status, headers=SECURITY_HEADERS)


class Dashboard:
    """The pages of one collector app over ``database``."""

    def __init__(self, config: Config, database: Database,
                 waivers: Waivers | None = None) -> None:
        self.config = config
        self.database = database
        self.waivers = waivers or Waivers(config.policy, config.offboard_inventory,
                                           config.waiver_groups)
        self.sessions = Sessions(database, config)
        self.offboarding = offboard.Offboarding(config, database)

    def guarded(self, fn: Page, roles: frozenset[str], *, post: bool = False,
                ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            try:
                if post:
                    who, data = await self.sessions.posted(request, roles)
                else:
                    who, data = await self.sessions.principal(request, roles), {}
                view = View(lang(request), who, csrf_token(request.cookies.get(COOKIE, "")),
                            request.url.path, self.waivers.judge())
                return await fn(self.database, view, request, data)
            except NotLoggedIn:
                return RedirectResponse(f"/login?next={request.url.path}", 303)
            except RoleRefused as exc:
                return message_page(request, 403, f"{t(lang(request), 'forbidden')} "
                                                  f"({exc}: {request.url.path})")
            except BadForm as exc:
                return message_page(request, 400, f"{t(lang(request), 'bad_form')} ({exc})")
            except NotFound as exc:
                return message_page(request, 404, str(exc))
            except Invalid as exc:
                return message_page(request, exc.status, exc.message)
            except Conflict as exc:
                return message_page(request, 409, f"conflict: {exc}")
            except DatabaseUnavailable as exc:
                log.error("database: %s", exc)
                return message_page(request, 503, "database unavailable; retry later")

        return handler

    async def login_form(self, request: Request, failed: bool = False) -> Response:
        language = lang(request)
        pre = new_pre_login()
        target = safe_next(request.query_params.get("next"))
        body = form(f"/login?next={target}", pre,
                    [field(t(language, "user"), "user"),
                     field(t(language, "password"), "password", "password")],
                    t(language, "login"), id_="login")
        if failed:
            body = join([tag("p", t(language, "wrong_login"), class_="error", id="message"), body])
        response = HTMLResponse(page(language, t(language, "login"), body, here="/login"),
                                401 if failed else 200, headers=SECURITY_HEADERS)
        set_pre_login(response, pre)
        return response

    async def login(self, request: Request) -> Response:
        try:
            data = await form_of(request)
        except BadForm as exc:
            return message_page(request, 400, str(exc))
        if not hmac.compare_digest(data.get("csrf", ""), request.cookies.get(PRE_LOGIN, "-")):
            return message_page(request, 400, t(lang(request), "bad_form"))
        address = request.client.host if request.client else "unknown"
        try:
            token = await self.sessions.login(data.get("user", ""), data.get("password", ""),
                                              address)
        except throttle.Locked as exc:
            return message_page(request, 429, str(exc))
        if token is None:
            return await self.login_form(request, failed=True)
        response = RedirectResponse(safe_next(request.query_params.get("next")), 303)
        self.sessions.set_session(response, token)
        response.delete_cookie(PRE_LOGIN, path="/", secure=True, httponly=True)
        return response

    async def logout(self, request: Request) -> Response:
        try:
            await self.sessions.posted(request, EVERYONE)
        except (NotLoggedIn, RoleRefused, BadForm):
            return RedirectResponse("/login", 303)
        await self.sessions.logout(request)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    async def home(self, request: Request) -> Response:
        try:
            who = await self.sessions.principal(request, EVERYONE)
        except NotLoggedIn:
            return RedirectResponse("/login", 303)
        return RedirectResponse("/offboarding" if who.role == "hr" else "/fleet", 303)

    async def language(self, request: Request) -> Response:
        code = request.path_params["code"]
        response = RedirectResponse(safe_next(request.query_params.get("next")), 303)
        if code in LANGS:
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path="/", secure=True,
                                httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return message_page(request, 404, f"/static/{name[:60]}: not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name],
                            headers={"Cache-Control": "max-age=3600",
                                     "X-Content-Type-Options": "nosniff"})

    @property
    def routes(self) -> list[Route]:
        g, o = self.guarded, self.offboarding
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/lang/{code}", self.language, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/fleet", g(fleet.overview, READERS), methods=["GET"]),
            Route("/audits", g(audits.audits_page, READERS), methods=["GET"]),
            Route("/hosts/{host}", g(fleet.host_page, READERS), methods=["GET"]),
            Route("/clauses/{clause}", g(fleet.clause_page, READERS), methods=["GET"]),
            Route("/findings/{id}/ack", g(fleet.acknowledge, IT, post=True), methods=["POST"]),
            Route("/escrow", g(escrow.escrow_page, IT), methods=["GET"]),
            Route("/escrow", g(escrow.escrow_page, IT, post=True), methods=["POST"]),
            Route("/offboarding", g(o.list_page, EVERYONE), methods=["GET"]),
            Route("/offboarding", g(o.create, OFFBOARDERS, post=True), methods=["POST"]),
            Route("/offboarding/{id}", g(o.request_page, EVERYONE), methods=["GET"]),
            Route("/offboarding/{id}/progress.json", g(o.progress, EVERYONE),
                  methods=["GET"]),
        ]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Background work of the pages while the app runs: offboarding runs and the daily
        purge (stopped, not awaited to the end, on shutdown)."""
        async with self.offboarding.running():
            yield
