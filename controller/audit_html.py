"""The audit report an auditor files: one self-contained, bilingual HTML page.

Cover (organisation, policy file, version and SHA-256, time, scope, verdict), the hosts ×
clauses matrix with a score per host, a section per clause (Chinese and English titles, score,
each host's checks with their evidence), the waivers and the policy's warnings.

Why it stays usable at fleet size: the matrix is one small cell per host × clause; the evidence
(the bulk) is embedded once as JSON and a clause's rows are built only when its section is
opened, a hundred at a time, filtered by host or group.  No network: no external file, and a
Content-Security-Policy that forbids every fetch.  Every text from a host is escaped here or
set with ``textContent`` by the script, never parsed as HTML.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from baomi.controller.audit_render import EXIT_MEANING, GLYPH, clause_title, matrix
from baomi.results import Audit, scores

TEXT = {  # key: (zh, en)
    "title": ("客户信息保密审计报告", "Customer data confidentiality audit"),
    "org": ("单位", "Organisation"), "policy": ("策略", "Policy"),
    "time": ("时间", "Time"), "scope": ("范围", "Scope"), "verdict": ("结论", "Verdict"),
    "matrix": ("主机 × 条款", "Hosts × clauses"), "host": ("主机", "Host"),
    "score": ("合规率", "Score"), "clauses": ("条款", "Clauses"),
    "waivers": ("豁免", "Waivers"), "warnings": ("警告", "Warnings"),
    "filter": ("按主机或组筛选", "Filter by host or group"),
    "legend": ("✓ 合规  ✗ 不合规  W 已豁免  E 无法审计  – 不适用",
               "✓ pass  ✗ fail  W waived  E could not audit  – not applicable"),
    "what": ("对象", "Clause / control"), "hosts": ("主机", "Hosts"),
    "reason": ("理由", "Reason"), "approver": ("批准人", "Approver"),
    "expires": ("有效期至", "Expires"), "state": ("状态", "State"),
    "waived": ("已豁免项", "Checks waived"), "none": ("无", "none"),
    "counts": ("合规 / 不合规 / 豁免 / 无法审计 / 不适用",
               "pass / fail / waived / error / n.a."),
    "hosts_n": ("台主机", "hosts"), "checks_n": ("项检查", "checks"),
}

CSS = """
body{font:14px/1.45 system-ui,"Noto Sans CJK SC",sans-serif;margin:0 2em 3em;color:#222}
h1{margin-top:1em}.cover{border-bottom:2px solid #333;padding-bottom:1em}
.cover dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}
.cover dt{font-weight:600}code{font-size:12px;word-break:break-all}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3;position:sticky;top:0}td.c{text-align:center;min-width:2.2em}
td.c a{text-decoration:none;color:inherit;display:block}
.pass{background:#d9f2d9}.fail{background:#f8d0d0}.waived{background:#fbefc4}
.error{background:#e8d0f0}.na{color:#888}.ev{white-space:pre-wrap;font-family:monospace;
font-size:12px}details{margin:.3em 0;border:1px solid #ddd;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}.muted{color:#666}button{margin:.4em 0}
#filter{width:24em;padding:.3em}.v0{color:#070}.v1{color:#a00}.v2{color:#808}
"""

SCRIPT = """
(function(){
var D=JSON.parse(document.getElementById('data').textContent);
var L=D.labels,PAGE=100,f=document.getElementById('filter');
function groups(h){return (D.groups[h]||[]).join(' ');}
function match(h){var q=f.value.trim().toLowerCase();
 return !q||h.toLowerCase().indexOf(q)>=0||groups(h).toLowerCase().split(' ').indexOf(q)>=0;}
var rows=document.querySelectorAll('#matrix tbody tr'),shown=PAGE;
var more=document.getElementById('more');
function page(){var n=0;rows.forEach(function(r){var ok=match(r.dataset.host);
 r.hidden=!ok||n>=shown;if(ok)n++;});more.hidden=n<=shown;
 document.getElementById('count').textContent=Math.min(n,shown)+' / '+n;}
more.addEventListener('click',function(){shown+=PAGE;page();});
function cell(tr,text,cls){var td=document.createElement('td');td.textContent=text;
 if(cls)td.className=cls;tr.appendChild(td);return td;}
function fill(det){var box=det.querySelector('.rows');box.textContent='';
 var c=det.dataset.clause,list=D.rows.filter(function(r){return r[5].indexOf(c)>=0&&match(r[0]);});
 var t=document.createElement('table'),h=document.createElement('tr');
 L.cols.forEach(function(x){var th=document.createElement('th');th.textContent=x;
  h.appendChild(th);});
 t.appendChild(h);var limit=Number(det.dataset.limit||PAGE);
 list.slice(0,limit).forEach(function(r){var tr=document.createElement('tr');
  cell(tr,r[0]);cell(tr,r[1]);cell(tr,r[2],r[2]==='not applicable'?'na':r[2]);
  cell(tr,r[3]);cell(tr,r[4],'ev');cell(tr,r[6]);t.appendChild(tr);});
 box.appendChild(t);if(list.length>limit){var b=document.createElement('button');
  b.textContent=L.more+' ('+(list.length-limit)+')';b.addEventListener('click',function(){
  det.dataset.limit=limit+PAGE;fill(det);});box.appendChild(b);}}
document.querySelectorAll('details[data-clause]').forEach(function(d){
 d.addEventListener('toggle',function(){if(d.open)fill(d);});if(d.open)fill(d);});
f.addEventListener('input',function(){shown=PAGE;page();
 document.querySelectorAll('details[data-clause][open]').forEach(fill);});
page();
})();
"""

CLASS = {"pass": "pass", "fail": "fail", "waived": "waived", "error": "error",
         "not applicable": "na"}


def _t(key: str, lang: str) -> str:
    zh, en = TEXT[key]
    return f"{escape(zh)} · {escape(en)}" if lang == "zh" else f"{escape(en)} · {escape(zh)}"


def _evidence(e: dict[str, str]) -> str:
    if "looked_at" in e:
        return e["looked_at"]
    return f"{e.get('subject', '')}: expected {e.get('expected', '')}, found {e.get('found', '')}"


def _data(audit: Audit, lang: str) -> str:
    cols = [("主机", "host"), ("检查", "check"), ("状态", "status"), ("说明", "note"),
            ("证据", "evidence"), ("时间", "time")]
    data: dict[str, Any] = {
        "groups": audit.scope.get("groups", {}),
        "labels": {"cols": [f"{zh} · {en}" if lang == "zh" else f"{en} · {zh}"
                            for zh, en in cols],
                   "more": "更多 more" if lang == "zh" else "more 更多"},
        "rows": [[r.host, r.check, r.status, r.reason,
                  "\n".join(_evidence(e) for e in r.evidence), list(r.clauses),
                  r.timestamp] for r in audit.results]}
    # Inside <script>: no "</" can end the element early, whatever a host printed.
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def _cover(audit: Audit, lang: str) -> str:
    p = audit.policy
    status = audit.exit_status()
    counts = " / ".join(str(v) for v in (
        sum(r.status == s for r in audit.results)
        for s in ("pass", "fail", "waived", "error", "not applicable")))
    hosts = audit.hosts
    rows = [
        ("org", escape(audit.organisation or "—")),
        ("policy", f"{escape(str(p.get('file', '—')))} · version {escape(str(p.get('version', 1)))}"
                   f"<br><code>sha256 {escape(str(p.get('sha256', '—')))}</code>"),
        ("time", f"{escape(audit.started)} → {escape(audit.finished)}"),
        ("scope", f"{len(hosts)} {_t('hosts_n', lang)} · {len(audit.results)} "
                  f"{_t('checks_n', lang)} · {escape(', '.join(hosts[:30]))}"
                  f"{' …' if len(hosts) > 30 else ''}"),
        ("verdict", f"<span class='v{status}'>{escape(EXIT_MEANING[status])}</span>"),
        ("counts", escape(counts)),
    ]
    items = "".join(f"<dt>{_t(k, lang)}</dt><dd>{v}</dd>" for k, v in rows)
    return (f"<section class='cover'><h1>{_t('title', lang)}</h1><dl>{items}</dl></section>")


def _matrix(audit: Audit, lang: str) -> str:
    cells = matrix(audit)
    clauses = audit.clauses
    host_scores = scores(audit.results, "host")
    head = "".join(f"<th title='{escape(' / '.join(clause_title(c)))}'>{escape(c)}</th>"
                   for c in clauses)
    body = []
    for host in audit.hosts:
        row = cells.get(host, {})
        tds = "".join(
            f"<td class='c {CLASS[row[c]]}' title='{escape(c)}: {escape(row[c])}'>"
            f"<a href='#c-{escape(c)}'>{GLYPH[row[c]]}</a></td>" if c in row else "<td></td>"
            for c in clauses)
        score = host_scores.get(host, {}).get("score")
        body.append(f"<tr data-host='{escape(host)}'><th>{escape(host)}</th>{tds}"
                    f"<td>{'—' if score is None else f'{score}%'}</td></tr>")
    return (f"<section><h2>{_t('matrix', lang)}</h2><p class='muted'>{_t('legend', lang)}</p>"
            f"<input id='filter' placeholder='{_t('filter', lang)}'> <span id='count'></span>"
            f"<table id='matrix'><thead><tr><th>{_t('host', lang)}</th>{head}"
            f"<th>{_t('score', lang)}</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<button id='more' hidden>more · 更多</button></section>")


def _clauses(audit: Audit, lang: str) -> str:
    clause_scores = scores(audit.results, "clause")
    out = [f"<section><h2>{_t('clauses', lang)}</h2>"]
    for c in audit.clauses:
        zh, en = clause_title(c)
        s = clause_scores.get(c, {})
        score = "—" if s.get("score") is None else f"{s['score']}%"
        tally = " / ".join(str(s.get(k, 0)) for k in
                           ("pass", "fail", "waived", "error", "not applicable"))
        is_open = " open" if len(audit.hosts) <= 20 and (s.get("fail") or s.get("error")) else ""
        out.append(f"<details id='c-{escape(c)}' data-clause='{escape(c)}'{is_open}><summary>"
                   f"{escape(c)} {escape(zh)} · {escape(en)} — {_t('score', lang)} {score} "
                   f"<span class='muted'>({tally})</span></summary><div class='rows'></div>"
                   f"</details>")
    out.append("</section>")
    return "".join(out)


def _waivers(audit: Audit, lang: str) -> str:
    head = "".join(f"<th>{_t(k, lang)}</th>" for k in
                   ("what", "hosts", "reason", "approver", "expires", "state", "waived"))
    rows = "".join(
        f"<tr class='{'fail' if w['state'] == 'expired' else ''}'>"
        f"<td>{escape(str(w.get('clause') or w.get('control')))}</td>"
        f"<td>{escape(', '.join(w['hosts']))}</td><td>{escape(w['reason'])}</td>"
        f"<td>{escape(w['approver'])}</td><td>{escape(w['expires'])}</td>"
        f"<td>{escape(w['state'])}</td><td>{int(w['waived'])}</td></tr>"
        for w in audit.waivers)
    table = f"<table><tr>{head}</tr>{rows}</table>" if rows else f"<p>{_t('none', lang)}</p>"
    warnings = "".join(f"<li>{escape(w)}</li>" for w in audit.warnings)
    return (f"<section id='waivers'><h2>{_t('waivers', lang)}</h2>{table}"
            + (f"<h3>{_t('warnings', lang)}</h3><ul>{warnings}</ul>" if warnings else "")
            + "</section>")


def html(audit: Audit, lang: str = "zh") -> str:
    """The whole page (UTF-8 text)."""
    return ("<!doctype html><html lang='" + ("zh-CN" if lang == "zh" else "en") + "'><head>"
            "<meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
            "content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'\">"
            f"<title>{_t('title', lang)} — {escape(audit.organisation)} {escape(audit.started)}"
            f"</title><style>{CSS}</style></head><body>"
            + _cover(audit, lang) + _matrix(audit, lang) + _clauses(audit, lang)
            + _waivers(audit, lang)
            + f"<script type='application/json' id='data'>{_data(audit, lang)}</script>"
            f"<script>{SCRIPT}</script></body></html>")
