"""The pages for `it` and `auditor`: fleet overview, a host, a clause; the acknowledge form
(`it`).

Everything shown comes from the same store functions as the API (``store.summary``,
``store.hosts``, ``store.find``, ``store.finding``, ``store.list_agents``), so the pages and
``GET /api/v1/...`` cannot disagree; so do the waivers: the view's judge for today
(``collector/waiving.py``, the API's own) marks each failing finding waived or its waiver expired.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from baomi.clauses import CLAUSES
from baomi.collector import alerts, auditlog, store, validate
from baomi.collector.db import Database, Tx
from baomi.collector.store import NotFound
from baomi.collector.validate import FindingQuery
from baomi.collector.web.html import Html, badge, field, form, h, join, link, path, table, tag
from baomi.collector.web.i18n import t
from baomi.collector.web.view import View
from baomi.controls.registry import CONTROLS
from baomi.findings import SEVERITY_RANK

SEVERITIES = sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__, reverse=True)
MAX_ROWS = 1000


def clause_title(lang: str, clause: str) -> Html:
    """``R-USB 外部存储设备`` with the English summary beside it (both in either language:
    the Chinese title is what the regulation and every output cite)."""
    c = CLAUSES[clause]
    return join([tag("span", c.title, lang="zh-CN"), " · ",
                 tag("span", c.summary, class_="en", lang="en")])


def waiver_note(lang: str, finding: dict[str, Any]) -> Html:
    """"waived by X until D" or "waiver expired on D" (nothing without a waiver)."""
    w = finding.get("waiver")
    if not w:
        return h("")
    if finding.get("waived"):
        text = t(lang, "waived_by", approver=w["approver"], expires=w["expires"])
        return tag("span", text, class_="badge waived", title=w["reason"])
    text = t(lang, "waiver_expired", approver=w["approver"], expires=w["expires"])
    return tag("span", text, class_="badge expired", title=w["reason"])


def state_cell(lang: str, finding: dict[str, Any]) -> Html:
    """The finding's state badge and, beside it, what the waivers say."""
    note = waiver_note(lang, finding)
    return join([badge(finding["state"]), " ", note]) if note else badge(finding["state"])


def severity_cells(counts: dict[str, int]) -> list[Html]:
    return [badge(s, counts.get(s, 0)) if counts.get(s, 0) else h("0") for s in SEVERITIES]


async def overview(db: Database, v: View, request: Request, form_: dict[str, str]) -> Response:
    judge = v.judge
    summary = await db.read(lambda tx: store.summary(tx, judge))
    hosts = {row["host"]: row for row in await db.read(lambda tx: store.hosts(tx, judge))}
    compliance = {row["host"]: row for row in summary["by_host"]}
    totals = {s: sum(row["open"][s] for row in hosts.values()) for s in SEVERITIES}
    lang = v.lang
    host_rows = []
    for name in sorted(set(hosts) | set(compliance)):
        row = hosts.get(name) or {"open": {}, "agent_state": None, "last_seen": None,
                                  "acknowledged": 0, "waived": 0}
        failing = compliance.get(name, {}).get("failing_clauses", [])
        host_rows.append([
            link(path("hosts", name), name), badge(row["agent_state"] or "none",
                                                   row["agent_state"] or t(lang, "none")),
            row["last_seen"] or "—", *severity_cells(row["open"]), row["acknowledged"],
            badge("waived", row["waived"]) if row.get("waived") else "0",
            join(link(path("clauses", c), c) for c in failing) if failing
            else badge("ok", t(lang, "compliant"))])
    clause_rows = [[link(path("clauses", c["clause"]), c["clause"]),
                    clause_title(lang, c["clause"]), c["hosts_compliant"],
                    badge("failing", c["hosts_failing"]) if c["hosts_failing"] else "0",
                    c["open"], c["acknowledged"], c.get("waived", 0)]
                   for c in summary["by_clause"]]
    alerted = (await db.read(lambda tx: alerts.listing(tx, "open", 0, 100)))["alerts"]
    alert_rows = [[a["created"], badge(a["severity"]), link(path("hosts", a["host"]), a["host"]),
                   a["check"], join(link(path("clauses", c), c) for c in a["clauses"]),
                   f"webhook {a['webhook']['state']} ({a['webhook']['attempts']}), "
                   f"syslog {a['syslog']['state']}"] for a in alerted]
    body = join([
        tag("h2", f"{t(lang, 'open_alerts')} ({len(alert_rows)})"),
        table([t(lang, "when"), t(lang, "severity"), t(lang, "host"), t(lang, "check"),
               t(lang, "clause"), t(lang, "delivery")], alert_rows, id_="alerts")
        if alert_rows else tag("p", t(lang, "none_yet"), id="alerts"),
        tag("h2", t(lang, "open_by_severity")),
        table(SEVERITIES, [severity_cells(totals)], id_="severity-totals"),
        tag("h2", f"{t(lang, 'hosts')} ({summary['hosts']})"),
        table([t(lang, "host"), t(lang, "agent"), t(lang, "last_seen"), *SEVERITIES,
               t(lang, "acknowledged"), t(lang, "waived"), t(lang, "failing_clauses")], host_rows,
              id_="hosts"),
        tag("h2", t(lang, "compliance")),
        table([t(lang, "clause"), t(lang, "title"), t(lang, "compliant"), t(lang, "failing"),
               t(lang, "open"), t(lang, "acknowledged"), t(lang, "waived")], clause_rows,
              id_="clauses"),
    ])
    return v.page(t(lang, "fleet"), body)


def _query(**params: str) -> FindingQuery:
    return validate.finding_query({**params, "limit": str(MAX_ROWS)})


def ack_form(v: View, finding: dict[str, Any]) -> Html:
    if v.who.role != "it" or finding["state"] != "open":
        if finding["ack"]:
            return h(f"{finding['ack']['by']}: {finding['ack']['comment']}")
        return h("")
    return form(path("findings", str(finding["id"]), "ack"), v.csrf,
                [field(t(v.lang, "comment"), "comment")], t(v.lang, "ack"),
                id_=f"ack-{finding['id']}")


async def host_page(db: Database, v: View, request: Request, form_: dict[str, str]) -> Response:
    name = request.path_params["host"]
    validate.host_name(name, "host")
    lang = v.lang
    judge = v.judge
    found = (await db.read(lambda tx: store.find(tx, _query(host=name), judge)))["findings"]
    agents = [a for a in await db.read(store.list_agents) if a["host"] == name]
    if not found and not agents:
        raise NotFound(f"host {name!r} not found")
    histories = await db.read(lambda tx: [store.finding(tx, f["id"]) for f in found[:200]])
    events = sorted(((e["ts"], f, e) for f in histories for e in f["history"]),
                    key=lambda item: item[0], reverse=True)
    timeline = [[e["ts"], badge(e["kind"]), f["check"], f["subject"],
                 e.get("found") or e.get("comment") or "", e.get("by") or ""]
                for _, f, e in events[:MAX_ROWS]]
    # Every control of the registry, in baseline order, then any other the findings name: a
    # control without a finding here says "no finding", not "compliant" (nothing may check it).
    # A waived finding counts as waived only, not as open or acknowledged.
    by_control: dict[str, dict[str, int]] = {
        e.name: {"open": 0, "acknowledged": 0, "resolved": 0, "waived": 0} for e in CONTROLS}
    for f in found:
        counts = by_control.setdefault(f["control"], {"open": 0, "acknowledged": 0,
                                                      "resolved": 0, "waived": 0})
        counts["waived" if f["waived"] else f["state"]] += 1
    control_rows = []
    for c, n in by_control.items():
        failing = n["open"] + n["acknowledged"]
        state = (badge("failing", t(lang, "failing")) if failing
                 else badge("waived", t(lang, "waived")) if n["waived"]
                 else badge("none", t(lang, "no_finding")))
        control_rows.append([c, state, n["open"], n["acknowledged"], n["waived"],
                             n["resolved"]])
    finding_rows = [[f["id"], badge(f["severity"]), f["check"],
                     join(link(path("clauses", c), c) for c in f["clauses"]), f["subject"],
                     f["expected"], f["found"], state_cell(lang, f), f["last_seen"],
                     ack_form(v, f)]
                    for f in sorted(found, key=lambda f: (f["state"] == "resolved", f["waived"],
                                                          -SEVERITY_RANK[f["severity"]]))]
    agent_rows = [[a["id"], badge(a["state"]), a["enrolled"], a["last_seen"] or "—",
                   a["heartbeat"] or "—", a["acked_seq"], a["missing"],
                   join(tag("div", f"{k}: {val}") for k, val in sorted((a["health"] or {})
                                                                     .items()))]
                  for a in agents]
    body = join([
        tag("h2", t(lang, "agent_health")),
        table(["#", t(lang, "state"), t(lang, "enrolled"), t(lang, "last_seen"),
               t(lang, "heartbeat"), "acked_seq", t(lang, "missing"), t(lang, "health")],
              agent_rows, id_="agents"),
        tag("h2", t(lang, "controls")),
        table([t(lang, "control"), t(lang, "state"), t(lang, "open"), t(lang, "acknowledged"),
               t(lang, "waived"), t(lang, "resolved")], control_rows, id_="controls"),
        tag("h2", t(lang, "findings")),
        table(["#", t(lang, "severity"), t(lang, "check"), t(lang, "clause"),
               t(lang, "subject"), t(lang, "expected"), t(lang, "found"), t(lang, "state"),
               t(lang, "last_seen"), t(lang, "ack")], finding_rows, id_="findings"),
        tag("h2", t(lang, "timeline")),
        table([t(lang, "when"), t(lang, "event"), t(lang, "check"), t(lang, "subject"),
               t(lang, "found"), t(lang, "ack_by")], timeline, id_="timeline"),
    ])
    return v.page(f"{t(lang, 'host')} {name}", body)


async def clause_page(db: Database, v: View, request: Request,
                      form_: dict[str, str]) -> Response:
    clause = request.path_params["clause"]
    if clause not in CLAUSES:
        raise NotFound(f"clause {clause!r} not found")
    lang = v.lang
    c = CLAUSES[clause]
    judge = v.judge
    summary = await db.read(lambda tx: store.summary(tx, judge))
    found = (await db.read(lambda tx: store.find(tx, _query(clause=clause), judge)))["findings"]
    active = [f for f in found if f["state"] != "resolved"]
    rows = []
    for host in summary["by_host"]:
        mine = [f for f in active if f["host"] == host["host"]]
        failing = clause in host["failing_clauses"]
        rows.append([link(path("hosts", host["host"]), host["host"]),
                     badge("failing" if failing else "ok",
                           t(lang, "failing" if failing else "compliant")),
                     join(tag("div", join([f"{f['check']} · {f['subject']} ({f['state']}) ",
                                           waiver_note(lang, f)]))
                          for f in mine)])
    body = join([
        tag("p", join([tag("strong", c.title, lang="zh-CN"), " — ",
                       tag("span", c.summary, lang="en")]), id="clause-title"),
        tag("p", c.source, class_="source"),
        table([t(lang, "host"), t(lang, "state"), t(lang, "findings")], rows,
              id_="clause-hosts"),
    ])
    return v.page(f"{clause} {c.title}", body)


async def acknowledge(db: Database, v: View, request: Request,
                      form_: dict[str, str]) -> Response:
    raw = request.path_params["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"finding {raw[:40]!r} not found")
    finding_id = int(raw)
    comment = validate.text(form_.get("comment", "").strip(), "comment", validate.MAX_COMMENT,
                            empty=False)
    def write(tx: Tx) -> dict[str, Any]:
        made = alerts.acknowledge(tx, finding_id, v.who.name, comment)  # the API's own ack
        auditlog.append(tx, v.who.name, v.who.role, "finding.ack",
                        {"finding": finding_id, "host": made["host"], "check": made["check"],
                         "comment": comment, "via": "dashboard"})
        return made

    done = await db.write(write)
    return RedirectResponse(path("hosts", done["host"]), 303)
