"""The audit's plain outputs: the terminal summary, JUnit XML, JSON, the comparison of two.

The HTML report an auditor files is :mod:`baomi.controller.audit_html`.  Every text shown
here came from a host at some point (subjects, found values): the terminal prints it without
markup (``markup=False``) and XML escapes it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from baomi.clauses import CLAUSES, TITLE_EN
from baomi.controls.contract import FAIL, NOT_APPLICABLE, PASS
from baomi.results import ERROR, WAIVED, Audit, CheckResult, scores

#: Worst first: a cell of the matrix shows the worst status of its checks.
RANK = (ERROR, FAIL, WAIVED, PASS, NOT_APPLICABLE)
GLYPH = {ERROR: "E", FAIL: "✗", WAIVED: "W", PASS: "✓", NOT_APPLICABLE: "–"}
STYLE = {ERROR: "magenta", FAIL: "red", WAIVED: "yellow", PASS: "green", NOT_APPLICABLE: "dim"}
EXIT_MEANING = {
    0: "exit 0: every check passed or is waived",
    1: "exit 1: findings (failed checks, listed above with their evidence)",
    2: "exit 2: could not audit everything (a host did not answer or a check could not run)",
}
LABELS = {  # key: (zh, en)
    "host": ("主机", "host"), "score": ("合规率", "score"),
    "failures": ("不合规项", "failures"), "errors": ("无法审计", "could not audit"),
    "waivers": ("豁免", "waivers"), "matrix": ("主机 × 条款", "hosts × clauses"),
}


def label(key: str, lang: str) -> str:
    zh, en = LABELS[key]
    return f"{zh} {en}" if lang == "zh" else f"{en} ({zh})"


def worst(statuses: list[str]) -> str:
    return min(statuses, key=RANK.index) if statuses else NOT_APPLICABLE


def matrix(audit: Audit) -> dict[str, dict[str, str]]:
    """{host: {clause: worst status}} over the audit's records."""
    cells: dict[str, dict[str, list[str]]] = {}
    for r in audit.results:
        for c in r.clauses:
            cells.setdefault(r.host, {}).setdefault(c, []).append(r.status)
    return {h: {c: worst(v) for c, v in row.items()} for h, row in cells.items()}


def terminal(audit: Audit, console: Console, lang: str = "en", max_rows: int = 25) -> None:
    """The matrix, the score per host, failures and errors with their evidence, waivers."""
    cells = matrix(audit)
    clauses = audit.clauses
    host_scores = scores(audit.results, "host")
    table = Table(title=f"baomi audit: {label('matrix', lang)}", box=None, padding=(0, 1))
    table.add_column(label("host", lang), no_wrap=True)
    for c in clauses:
        table.add_column(c.removeprefix("R-"), justify="center", no_wrap=True)
    table.add_column("%", justify="right", no_wrap=True)
    for host in audit.hosts:
        row = cells.get(host, {})
        score = host_scores.get(host, {}).get("score")
        table.add_row(host, *[f"[{STYLE[row[c]]}]{GLYPH[row[c]]}[/]" if c in row else ""
                              for c in clauses], "—" if score is None else f"{score}%")
    # As wide as the matrix needs (a file or a pipe would otherwise cut it at 80 columns).
    width = max(console.width, 16 + max(map(len, audit.hosts), default=4) + 6 * len(clauses))
    Console(file=console.file, width=width, no_color=console.no_color,
            force_terminal=console.is_terminal).print(table)
    console.print("✓ pass  ✗ fail  W waived  E could not audit  – not applicable", style="dim")
    bad = [r for r in audit.results if r.status in (FAIL, ERROR)]
    if bad:
        console.print(f"\n{label('failures', lang)}:", markup=False)
    for r in bad[:max_rows]:
        console.print(f"  {r.host} {r.check} [{' '.join(r.clauses)}] {r.status}: "
                      f"{r.reason or r.title}", markup=False, highlight=False, soft_wrap=True)
        for e in r.evidence[:2]:
            console.print("      " + _evidence_line(e), markup=False, highlight=False,
                          soft_wrap=True)
    if len(bad) > max_rows:
        console.print(f"  … {len(bad) - max_rows} more in the report", markup=False)
    unreachable = sorted({r.host for r in audit.results if r.status == ERROR})
    if unreachable:
        console.print(f"could not audit: {', '.join(unreachable)}", markup=False, soft_wrap=True)
    for w in audit.waivers:
        what = w.get("clause") or w.get("control")
        console.print(f"waiver {what} on {', '.join(w['hosts'])} by {w['approver']} until "
                      f"{w['expires']}: {w['state']} ({w['waived']} waived)", markup=False,
                      soft_wrap=True)
    for warning in audit.warnings:
        console.print(f"warning: {warning}", markup=False, soft_wrap=True)


def _evidence_line(e: dict[str, str]) -> str:
    if "looked_at" in e:
        return f"looked at: {e['looked_at']}"
    return f"{e.get('subject', '')}: expected {e.get('expected', '')}, found {e.get('found', '')}"


def junit(audit: Audit) -> bytes:
    """JUnit XML (the common schema CI systems read: testsuites > testsuite per host >
    testcase per check; failure, error or skipped with a message)."""
    root = ET.Element("testsuites", name="baomi audit")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = 0.0
    for host in audit.hosts:
        rows = [r for r in audit.results if r.host == host]
        counts = {"tests": len(rows), "failures": sum(r.status == FAIL for r in rows),
                  "errors": sum(r.status == ERROR for r in rows),
                  "skipped": sum(r.status in (WAIVED, NOT_APPLICABLE) for r in rows)}
        seconds = sum(r.duration for r in rows)
        attrs = {"name": host, "time": f"{seconds:.3f}",
                 "timestamp": rows[0].timestamp[:19] if rows else audit.started[:19],
                 **{k: str(v) for k, v in counts.items()}}
        suite = ET.SubElement(root, "testsuite", attrs)
        for r in rows:
            case = ET.SubElement(suite, "testcase", classname=f"{host}.{r.control}",
                                 name=r.check, time=f"{r.duration:.3f}")
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="clauses", value=" ".join(r.clauses))
            ET.SubElement(props, "property", name="status", value=r.status)
            text = "\n".join(_evidence_line(e) for e in r.evidence)
            if r.status == FAIL:
                ET.SubElement(case, "failure", message=r.reason or r.title,
                              type="finding").text = text
            elif r.status == ERROR:
                ET.SubElement(case, "error", message=r.reason, type="unreachable").text = text
            elif r.status in (WAIVED, NOT_APPLICABLE):
                ET.SubElement(case, "skipped", message=f"{r.status}: {r.reason}")
        for k, v in counts.items():
            totals[k] += v
        total_time += seconds
    root.set("time", f"{total_time:.3f}")
    for k, v in totals.items():
        root.set(k, str(v))
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


def write(audit: Audit, folder: Path, formats: tuple[str, ...], lang: str) -> dict[str, Path]:
    """The report files of ``formats`` (json, junit, html) in ``folder``, each 0640."""
    from baomi.controller.audit_html import html

    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    made: dict[str, Path] = {}
    def as_json() -> bytes:
        return json.dumps(audit.as_dict(), ensure_ascii=False, indent=1).encode()

    outputs: dict[str, tuple[str, Callable[[], bytes]]] = {
        "json": ("audit.json", as_json), "junit": ("junit.xml", lambda: junit(audit)),
        "html": ("report.html", lambda: html(audit, lang).encode())}
    for fmt in ("json", *[f for f in formats if f != "json"]):
        if fmt not in outputs:
            continue
        name, render = outputs[fmt]
        path = folder / name
        path.write_bytes(render())
        path.chmod(0o640)
        made[fmt] = path
    return made


def diff_table(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print("no change between the two audits", markup=False)
        return
    table = Table(title="baomi audit diff")
    for column in ("host", "check", "clauses", "before", "after"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["host"], r["check"], r["clauses"],
                      f"[{STYLE.get(r['before'], '')}]{r['before']}[/]",
                      f"[{STYLE.get(r['after'], '')}]{r['after']}[/]")
    console.print(table)


def clause_title(clause: str) -> tuple[str, str]:
    known = CLAUSES.get(clause)
    return (known.title if known else clause, TITLE_EN.get(clause, ""))


def records_of(audit: Audit, clause: str) -> list[CheckResult]:
    return [r for r in audit.results if clause in r.clauses]
