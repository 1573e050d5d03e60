"""HTML building with escaping by default: every value goes through :func:`h` unless it is
already :class:`Html` (made here from escaped parts), so a host name, a finding's evidence or
anything else a managed host sent cannot inject markup.  No template engine: the pages are
small, and the collector's dependencies stay as they are.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import quote

from baomi.collector.web.i18n import LANGS, t


class Html(str):
    """Markup that is safe to emit as is (built only from escaped parts)."""

    __slots__ = ()


def h(value: object) -> Html:
    """``value`` as HTML text: escaped, unless it is already :class:`Html`."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object]) -> Html:
    return Html("".join(h(p) for p in parts))


def tag(name: str, content: object = "", **attrs: object) -> Html:
    """``<name attrs>content</name>``; ``class_`` stands for ``class``; None drops an attr."""
    text = "".join(f' {k.rstrip("_").replace("_", "-")}="{h(v)}"'
                   for k, v in attrs.items() if v is not None)
    return Html(f"<{name}{text}>{h(content)}</{name}>")


def link(href: str, content: object) -> Html:
    return tag("a", content, href=href)


def path(*parts: str) -> str:
    """A URL path from segments, each percent-encoded."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def table(headers: Iterable[object], rows: Iterable[Iterable[object]],
          id_: str | None = None) -> Html:
    head = join(tag("th", x) for x in headers)
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    return tag("table", join([tag("thead", tag("tr", head)), tag("tbody", body)]), id=id_)


def hidden(name: str, value: str) -> Html:
    return Html(f'<input type="hidden" name="{h(name)}" value="{h(value)}">')


def form(action: str, csrf: str, fields: Iterable[object], submit: str,
         id_: str | None = None) -> Html:
    """A POST form carrying the CSRF token."""
    button = Html(f'<button type="submit">{h(submit)}</button>')
    return tag("form", join([hidden("csrf", csrf), *fields, button]), method="post",
               action=action, id=id_)


def field(label: str, name: str, kind: str = "text", value: str = "",
          required: bool = True, textarea: bool = False) -> Html:
    req = " required" if required else ""
    if textarea:
        box = Html(f'<textarea name="{h(name)}" id="f-{h(name)}"{req}>{h(value)}</textarea>')
    else:
        box = Html(f'<input type="{h(kind)}" name="{h(name)}" id="f-{h(name)}" '
                   f'value="{h(value)}"{req}>')
    return tag("label", join([tag("span", label), box]), for_=f"f-{name}")


def badge(state: str, text: object | None = None) -> Html:
    return tag("span", state if text is None else text, class_=f"badge {state}")


def nav(lang: str, role: str) -> Html:
    items: list[tuple[str, str]] = []
    if role in ("it", "auditor"):
        items.append(("/fleet", t(lang, "fleet")))
        items.append(("/audits", t(lang, "audits")))
    items.append(("/offboarding", t(lang, "offboarding")))
    if role == "it":
        items.append(("/escrow", t(lang, "escrow")))
    return join(link(href, text) for href, text in items)


def page(lang: str, title: str, body: object, *, user: str = "", role: str = "",
         csrf: str = "", here: str = "/") -> Html:
    """The whole document: header (navigation, language switch, logout), then ``body``."""
    switch = join(link(f"/lang/{code}?next={quote(here, safe='/')}", label)
                  for code, label in zip(LANGS, ("中文", "English"), strict=True))
    who = Html("")
    if user:
        who = join([tag("span", f"{user} ({role})", class_="who"),
                    form("/logout", csrf, [], t(lang, "logout"), id_="logout")])
    header = tag("header", join([tag("strong", t(lang, "app")),
                                 tag("nav", nav(lang, role) if user else ""),
                                 tag("span", switch, class_="lang"), who]))
    html_lang = "en" if lang == "en" else "zh-CN"
    return Html(
        f'<!doctype html><html lang="{html_lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · baomi</title>"
        f'<link rel="stylesheet" href="/static/style.css"></head>'
        f"<body>{header}<main><h1>{h(title)}</h1>{h(body)}</main></body></html>")
