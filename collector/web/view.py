"""What a page handler gets: the language, the person, their CSRF token, the page's path, and
today's waivers (collector/waiving.py)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import HTMLResponse

from baomi.collector.store import Principal
from baomi.collector.waiving import NO_WAIVERS, Judge
from baomi.collector.web.html import page
from baomi.collector.web.session import SECURITY_HEADERS


@dataclass(frozen=True)
class View:
    lang: str
    who: Principal
    csrf: str
    here: str
    judge: Judge = NO_WAIVERS

    def page(self, title: str, body: object, status: int = 200) -> HTMLResponse:
        return HTMLResponse(page(self.lang, title, body, user=self.who.name,
                                 role=self.who.role, csrf=self.csrf, here=self.here),
                            status, headers=SECURITY_HEADERS)
