"""Escrow retrieval for `it` on the dashboard, through the system of record
(:mod:`baomi.collector.records_api`): the same ``retrieve`` as ``POST /api/v1/escrow/retrieve``,
so the retrieval (who, why, from where) is stored and logged in the hash-chained log in the
transaction that hands out the entry.  The entry is *sealed* to the offline escrow identity:
the collector cannot open it and neither can the page; it is shown for the holder of the
identity (``baomi escrow show`` opens it where the identity is kept).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from baomi.collector import records_api
from baomi.collector.db import Database
from baomi.collector.validate import Invalid
from baomi.collector.web.html import field, form, hidden, join, table, tag
from baomi.collector.web.i18n import t
from baomi.collector.web.view import View
from baomi.recordstore import ESCROW, RETRIEVALS, Retrieval

MAX_LISTED = 1000


async def escrow_page(db: Database, v: View, request: Request,
                      form_: dict[str, str]) -> Response:
    lang = v.lang
    parts: list[object] = []
    if request.method == "POST":
        reason = form_.get("reason", "").strip()
        if not reason:
            raise Invalid(t(lang, "reason_required"), 422)
        if len(reason) > 1000:
            raise Invalid("reason: at most 1000 characters", 422)
        address = request.client.host if request.client else "unknown"
        wanted = Retrieval(form_.get("kind", "")[:100], form_.get("host", "")[:253],
                           form_.get("subject", "")[:1000], reason,
                           {"via": "dashboard", "address": address})
        got = await db.write(lambda tx: records_api.retrieve(tx, v.who, wanted))
        parts += [tag("p", t(lang, "escrow_sealed", uid=got["retrieval"]), class_="notice",
                      id="escrow-status"),
                  tag("pre", json.dumps(got["entry"], ensure_ascii=False, indent=1),
                      id="sealed")]
    entries = (await db.read(lambda tx: records_api.list_records(tx, ESCROW, 0, MAX_LISTED))
               )["records"]
    taken = (await db.read(lambda tx: records_api.list_records(tx, RETRIEVALS, 0, MAX_LISTED))
             )["records"]
    rows = []
    for item in entries:
        r = item["record"]
        keys = [hidden(k, str(r.get(k, ""))) for k in ("kind", "host", "subject")]
        rows.append([r.get("kind"), r.get("host"), r.get("subject"), r.get("created"),
                     item["by"], form("/escrow", v.csrf,
                                      [*keys, field(t(lang, "reason"), "reason")],
                                      t(lang, "retrieve"))])
    parts += [tag("h2", t(lang, "escrow")),
              table(["kind", t(lang, "host"), t(lang, "subject"), t(lang, "when"),
                     t(lang, "created_by"), t(lang, "retrieve")], rows, id_="escrow")
              if rows else tag("p", t(lang, "none_yet")),
              tag("h2", t(lang, "retrievals")),
              table([t(lang, "when"), t(lang, "user"), t(lang, "host"), t(lang, "subject"),
                     t(lang, "reason")],
                    [[x["record"].get("time"), x["by"], x["record"].get("host"),
                      x["record"].get("subject"), x["record"].get("reason")]
                     for x in reversed(taken)], id_="retrievals")]
    return v.page(t(lang, "escrow"), join(parts))
