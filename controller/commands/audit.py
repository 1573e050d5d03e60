"""`baomi audit`: run the compliance checks on the fleet and file the report (R-AUD).

``baomi audit -i INVENTORY`` runs ``checks/`` over SSH, hosts in parallel, and writes the
report (JSON, JUnit XML, the bilingual HTML page) to a folder of its own per run; ``--upload``
sends the results to the collector, where ``baomi audit history`` finds them; ``baomi audit
diff A.json B.json`` compares two runs offline.  Exit status: 0 every check passed or is waived,
1 findings, 2 could not audit (a host did not answer, bad policy or inventory) — the last line
says which.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from baomi.controller import audit_render
from baomi.controller.audit_run import AuditError, audit, default_jobs, select
from baomi.controller.audit_run import Progress as Counts
from baomi.inventory import InventoryError, read
from baomi.policy import default_policy_path
from baomi.results import Audit, AuditFileError, diff, overall
from baomi.ui import EXIT_USAGE, console, fail, json_option, load_policy_or_exit, print_json

err = Console(stderr=True, highlight=False)


@click.group("audit", invoke_without_command=True)
@click.option("-i", "--inventory", help="pyinfra inventory of the fleet.")
@click.option("--policy", "policy_path", default=None,
              help="Policy file (default: $BAOMI_POLICY or ./policy.yaml).")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--report", "report_dir", default=None,
              help="Folder for the reports (default: the policy's reporting.report_dir); each "
                   "run gets a sub-folder named by its time.")
@click.option("--upload", is_flag=True, help="Send the results to the collector (baomi login).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="First language of the report's labels (both are always shown).")
@click.option("--jobs", type=click.IntRange(1, 64), default=default_jobs,
              show_default="one per CPU, at most 8",
              help="Hosts audited in parallel groups (one pytest each; each reads its hosts' "
                   "controls concurrently).")
@click.option("--ssh-config", "ssh_config", default=None, type=click.Path(dir_okay=False),
              help="Use this ssh_config instead of one made from the inventory.")
@json_option
@click.pass_context
def audit_cmd(ctx: click.Context, inventory: str | None, policy_path: str | None,
              limit: tuple[str, ...], report_dir: str | None, upload: bool, lang: str,
              jobs: int, ssh_config: str | None, as_json: bool) -> None:
    """Audit the fleet: every check per host and clause, with evidence, waivers and a report."""
    if ctx.invoked_subcommand is not None:
        return
    if not inventory:
        fail("baomi audit: give -i INVENTORY (the pyinfra inventory of the fleet)")
    path = Path(policy_path or default_policy_path())
    policy = load_policy_or_exit(str(path), as_json=as_json)
    try:
        hosts = read(inventory)
        names = select(hosts, limit)
    except (InventoryError, AuditError) as exc:
        fail(str(exc))
    if not names:
        fail(f"{inventory}: no host to audit")
    if ssh_config and not Path(ssh_config).is_file():
        fail(f"--ssh-config {ssh_config}: no such file")
    if upload:
        _session_or_exit()
    counts = Counts()
    with Progress(TextColumn("auditing {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[tally]}"), TimeElapsedColumn(),
                  console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task(f"{len(names)} hosts", total=None, tally="")

        def tick() -> None:
            tally = " ".join(f"{k}:{v}" for k, v in sorted(counts.by_status.items()))
            bar.update(task, completed=counts.done, total=counts.total or None, tally=tally)

        try:
            result = audit(policy, path, Path(inventory), hosts, names, list(limit),
                           Path(ssh_config) if ssh_config else None, jobs, counts, tick)
        except AuditError as exc:
            fail(str(exc))
    stamp = result.started.replace("-", "").replace(":", "").replace("+0000", "Z")[:15] + "Z"
    folder = Path(report_dir or policy.reporting.report_dir) / stamp
    try:
        made = audit_render.write(result, folder, policy.reporting.formats, lang)
    except OSError as exc:
        fail(f"cannot write the report to {folder}: {exc.strerror or exc}")
    uploaded = _upload(result) if upload else None
    status = result.exit_status()
    if as_json:
        print_json({"exit_status": status, "reports": {k: str(v) for k, v in made.items()},
                    "uploaded": uploaded, "summary": result.as_dict()["summary"]})
    else:
        if "terminal" in policy.reporting.formats:
            audit_render.terminal(result, console, lang)
        for fmt, file in made.items():
            console.print(f"{fmt:6} {file}", markup=False, soft_wrap=True)
        if uploaded:
            console.print(f"uploaded to the collector as audit {uploaded['id']}", markup=False)
        console.print(audit_render.EXIT_MEANING[status], markup=False, soft_wrap=True)
    sys.exit(status)


def _session_or_exit() -> Any:
    from baomi.controller.session import SessionError, load

    try:
        return load()
    except SessionError as exc:
        fail(f"--upload: {exc}")


def _upload(result: Audit, chunk: int = 2000) -> dict[str, Any]:
    """POST the audit to the collector, its results in parts under the body cap; a refusal
    is exit 2 (the report is already written)."""
    from baomi.controller.session import SessionError, call

    session = _session_or_exit()
    document = result.as_dict()
    rows = document.pop("results")
    made: dict[str, Any] = {}
    for start in range(0, max(len(rows), 1), chunk):
        part = rows[start:start + chunk]
        path, body = (("/api/v1/audits", dict(document, results=part)) if not made else
                      (f"/api/v1/audits/{made['id']}/results", {"results": part}))
        try:
            answer = call(session.url, session.ca, "POST", path, body, token=session.token,
                          timeout=60)
        except SessionError as exc:
            fail(f"--upload: {exc} (the report is written)")
        if answer.status not in (200, 201) or not isinstance(answer.body, dict):
            error = answer.body.get("error", "") if isinstance(answer.body, dict) else ""
            fail(f"--upload: the collector refused the audit ({answer.status}): {error} "
                 "(the report is written)")
        made = made or answer.body
    return made


def _load(path: str) -> Audit:
    try:
        return Audit.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), path)
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror or exc}")
    except ValueError as exc:
        fail(f"{path}: not JSON ({exc})")
    except AuditFileError as exc:
        fail(str(exc))


@audit_cmd.command("diff")
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@json_option
def diff_cmd(before: str, after: str, as_json: bool) -> None:
    """What changed between two audits (their audit.json files): per host and check."""
    a, b = _load(before), _load(after)
    rows = diff(a, b)
    if as_json:
        print_json({"before": a.started, "after": b.started, "changes": rows})
        return
    console.print(f"{escape(before)} ({a.started}) → {escape(after)} ({b.started})")
    audit_render.diff_table(rows, console)


@audit_cmd.command("history")
@click.option("--report", "report_dir", default=None,
              help="Read the runs kept in this folder instead of the collector's.")
@click.option("--limit", "count", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
def history_cmd(report_dir: str | None, count: int, as_json: bool) -> None:
    """Audits over time: score and counts per run, newest first (the collector's or a folder's)."""
    if report_dir:
        runs = _local_runs(Path(report_dir), count)
    else:
        from baomi.controller.session import SessionError, get

        try:
            runs = get(_session_or_exit(), "/api/v1/audits", {"limit": str(count)})["audits"]
        except SessionError as exc:
            fail(str(exc))
    if as_json:
        print_json({"audits": runs})
        return
    if not runs:
        console.print("no audit yet", markup=False)
    for r in runs:
        s = r["summary"]
        console.print(f"{r.get('id', '-')!s:>5} {r['started']}  score {r['score']}%  "
                      f"pass {s['pass']} fail {s['fail']} waived {s['waived']} "
                      f"error {s['error']} n.a. {s['not applicable']}  "
                      f"hosts {r['hosts']}  exit {r['exit_status']}", markup=False)


def _local_runs(folder: Path, count: int) -> list[dict[str, Any]]:
    if not folder.is_dir():
        fail(f"--report {folder}: no such folder", EXIT_USAGE)
    runs = []
    for file in sorted(folder.glob("*/audit.json"), reverse=True)[:count]:
        runs.append(run_summary(_load(str(file))))
    return runs


def run_summary(a: Audit) -> dict[str, Any]:
    """One line of history: what ``baomi audit history`` and the collector list."""
    d = a.as_dict()
    return {"started": a.started, "summary": d["summary"], "hosts": len(a.hosts),
            "score": overall(d["scores"]["hosts"]), "exit_status": d["exit_status"],
            "clauses": {c: v["score"] for c, v in d["scores"]["clauses"].items()}}
