"""The audits page (it, auditor): compliance per clause over time and what changed since the
previous audit, from the runs ``baomi audit --upload`` sent.

The figures come from :mod:`baomi.collector.audits` (``list_audits``, ``get_audit``), the same
functions as ``GET /api/v1/audits``, so the page and the API cannot disagree.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from baomi.clauses import CLAUSES, TITLE_EN
from baomi.collector.audits import ensure_tables, get_audit, list_audits
from baomi.collector.db import Database
from baomi.collector.web.html import Html, badge, join, table, tag
from baomi.collector.web.view import View

WORDS = {  # key: (zh, en); this page's own words
    "title": ("定期审计", "Audits"),
    "trend": ("各条款合规率（按审计时间）", "Compliance per clause over time"),
    "changes": ("与上次审计相比的变化", "Changed since the previous audit"),
    "none": ("尚无审计：运行 baomi audit --upload", "No audit yet: run baomi audit --upload"),
    "nochange": ("无变化", "No change"),
    "time": ("审计时间", "Audit time"), "score": ("合规率", "Score"),
    "hosts": ("主机数", "Hosts"), "by": ("上传者", "Uploaded by"),
    "host": ("主机", "Host"), "check": ("检查", "Check"), "clauses": ("条款", "Clauses"),
    "before": ("之前", "Before"), "after": ("之后", "After"),
}
RUNS = 26


def w(lang: str, key: str) -> str:
    zh, en = WORDS[key]
    return zh if lang == "zh" else en


def _score(value: object) -> Html:
    if value is None:
        return Html("—")
    score = int(str(value))
    return badge("ok" if score == 100 else "high" if score < 80 else "medium", f"{score}%")


async def audits_page(db: Database, v: View, request: Request, form_: dict[str, str],
                      ) -> Response:
    await db.write(lambda tx: ensure_tables(tx, db.dialect))
    runs = (await db.read(lambda tx: list_audits(tx, RUNS)))["audits"]
    lang = v.lang
    if not runs:
        return v.page(w(lang, "title"), tag("p", w(lang, "none"), id="audits-none"))
    clauses = [c for c in CLAUSES if any(c in r["clauses"] for r in runs)]
    head = [w(lang, "time"), w(lang, "score"), w(lang, "hosts"), w(lang, "by"),
            *[tag("abbr", c, title=f"{CLAUSES[c].title} · {TITLE_EN.get(c, '')}")
              for c in clauses]]
    rows = [[r["started"], _score(r["score"]), r["hosts"], r["by"],
             *[_score(r["clauses"].get(c)) for c in clauses]] for r in runs]
    latest = await db.read(lambda tx: get_audit(tx, runs[0]["id"]))
    changes = latest["changes"]
    change_table = table(
        [w(lang, k) for k in ("host", "check", "clauses", "before", "after")],
        [[c["host"], c["check"], c["clauses"], badge(c["before"], c["before"]),
          badge(c["after"], c["after"])] for c in changes[:1000]],
        id_="audit-changes") if changes else tag("p", w(lang, "nochange"), id="audit-changes")
    body = join([tag("h2", w(lang, "trend")), table(head, rows, id_="audit-trend"),
                 tag("h2", w(lang, "changes")), change_table])
    return v.page(w(lang, "title"), body)
