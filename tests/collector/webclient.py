"""A cookie-keeping HTTPS client for the dashboard's pages and forms (what a browser does,
without one): real TLS against the collector's pinned CA."""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode


@dataclass
class Page:
    status: int
    location: str
    body: str
    cookies: list[str]
    headers: dict[str, str]

    def csrf(self, form_id: str | None = None) -> str:
        text = self.body
        if form_id:
            start = text.index(f'id="{form_id}"') if f'id="{form_id}"' in text else 0
            text = text[max(0, text.rfind("<form", 0, start + 1)):]
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        assert found, self.body[:500]
        return found.group(1)


class Web:
    def __init__(self, port: int, ca: str, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.context = ssl.create_default_context(cafile=ca)
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, fields: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Page:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=30)
        sent = dict(headers or {})
        if self.jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = None
        if fields is not None:
            body = urlencode(fields)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            answer = conn.getresponse()
            text = answer.read().decode()
            set_cookies = answer.headers.get_all("set-cookie") or []
            headers = {k.lower(): v for k, v in answer.headers.items()}
        finally:
            conn.close()
        for line in set_cookies:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or 'expires=Thu, 01 Jan 1970' in line:
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        return Page(answer.status, answer.headers.get("location", ""), text, set_cookies,
                    headers)

    def get(self, path: str) -> Page:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str], **kw: dict[str, str]) -> Page:
        return self.request("POST", path, fields, **kw)

    def login(self, user: str, password: str) -> Page:
        form = self.get("/login")
        return self.post("/login", {"csrf": form.csrf(), "user": user, "password": password})
