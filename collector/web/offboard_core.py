"""HR's offboarding requests: the checks of the form, a host's outcome from the command's
output, the purge's schedule, the child's session file, and the tables
(``offboard_requests``, ``offboard_hosts``; migration 2). The service and pages that use them
are :mod:`baomi.collector.web.offboard`.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from baomi import offboarding as core
from baomi.collector import auditlog
from baomi.collector.db import Tx
from baomi.collector.store import NotFound, Principal
from baomi.collector.validate import Invalid, format_time
from baomi.policy import Policy

DONE_STATES = ("frozen", "absent", "pending", "refused", "failed")


# ---- pure parts ---------------------------------------------------------------------------

def check_request(form_: dict[str, str], today: date) -> tuple[str, str, str, date]:
    """(user, ticket, reason, effective) from HR's form; Invalid naming the field."""
    user = form_.get("user", "").strip()
    ticket = form_.get("ticket", "").strip()
    reason = form_.get("reason", "").strip()
    if not core.valid_name(user):
        raise Invalid(f"user: {user[:64]!r} is not a valid user name", 422)
    if not ticket or len(ticket) > 200 or not ticket.isprintable():
        raise Invalid("ticket: HR's ticket is required (1…200 printable characters)", 422)
    if not reason or len(reason) > 2000:
        raise Invalid("reason: required (1…2000 characters)", 422)
    raw = form_.get("effective", "").strip() or today.isoformat()
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"effective: {raw[:40]!r} is not a date (YYYY-MM-DD)", 422) from None
    if day > today:
        raise Invalid(f"effective: {day} is in the future: the freeze takes effect at once; "
                      "submit it on the day of departure", 422)
    problems = core.date_problems(today, effective=day)
    if problems:
        raise Invalid(f"effective: {'; '.join(problems)} (IT can force it with baomi "
                      "offboard --force)", 422)
    return user, ticket, reason, day


def host_outcome(host: str, code: int, stdout: str, stderr: str) -> tuple[str, str]:
    """A host's (state, detail) from one ``baomi offboard --limit HOST --json`` run."""
    try:
        report = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        report = {}
    got = report.get("hosts", {}).get(host) if isinstance(report, dict) else None
    if isinstance(got, dict) and isinstance(got.get("state"), str):
        detail = got.get("error") or (f"{len(got.get('done') or [])} steps done, "
                                      f"{len(got.get('already') or [])} already")
        state = got["state"] if got["state"] in DONE_STATES else "failed"
        return state, str(detail)
    last = (stderr.strip().splitlines() or [f"exit status {code}"])[-1][:500]
    return ("refused" if code == 2 else "failed"), last


def json_documents(text: str) -> list[dict[str, Any]]:
    """Every JSON object printed one after another (a command may print several)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    at = 0
    while True:
        start = text.find("{", at)
        if start < 0:
            return found
        try:
            value, at = decoder.raw_decode(text, start)
        except ValueError:
            return found
        if isinstance(value, dict):
            found.append(value)


def seconds_until(hour: int, now: datetime) -> float:
    """Seconds from ``now`` to the next ``hour``:00 UTC (a full day when it is that time)."""
    target = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


def write_child_session(folder: Path, url: str, ca: str, made: dict[str, Any]) -> Path:
    """``folder/session.json`` (0600, folder 0700, never through a link) in the format of
    ``baomi login``, so the child ``baomi offboard`` keeps its ledger at this collector."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise Invalid(f"collector.toml offboard_state {folder}: not a directory", 503)
    os.chmod(folder, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".session-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"url": url, "ca": ca, "user": made["user"], "role": made["role"],
                   "expires": made["expires"], "token": made["token"]}, fh)
    os.replace(tmp, folder / "session.json")
    return folder / "session.json"


# ---- the database -------------------------------------------------------------------------

def add_request(tx: Tx, user: str, ticket: str, reason: str, day: date, by: Principal,
                hosts: list[str], state: str = "running") -> int:
    """Store the request with its hosts queued; its line in the hash-chained log of human
    actions goes in with it (same transaction).  ``state`` ``queued`` (and no hosts): a job
    for root's runner (:mod:`baomi.collector.offboard_runner`), which adds the fleet's hosts
    when it takes the job."""
    now = time.time()
    tx.run("INSERT INTO offboard_requests (user_name, ticket, reason, effective, created, "
           "created_by, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
           (user, ticket, reason, day.isoformat(), now, by.name, state))
    row = tx.one("SELECT MAX(id) FROM offboard_requests WHERE created_by = ? AND created = ?",
                 (by.name, now))
    assert row is not None  # noqa: S101 inserted in this transaction
    auditlog.append(tx, by.name, by.role, "offboarding.request",
                    {"request": int(row[0]), "user": user, "ticket": ticket, "reason": reason,
                     "effective": day.isoformat(),
                     "hosts": len(hosts) if state == "running" else "the runner's fleet"})
    tx.many("INSERT INTO offboard_hosts (request_id, host, state, detail, updated) "
            "VALUES (?, ?, 'queued', '', ?)", [(row[0], h, now) for h in hosts])
    return int(row[0])


def set_host(tx: Tx, request_id: int, host: str, state: str, detail: str) -> None:
    tx.run("UPDATE offboard_hosts SET state = ?, detail = ?, updated = ? WHERE request_id = ? "
           "AND host = ?", (state, detail, time.time(), request_id, host))


def finish(tx: Tx, request_id: int) -> None:
    states = {s for (s,) in tx.all("SELECT state FROM offboard_hosts WHERE request_id = ?",
                                   (request_id,))}
    tx.run("UPDATE offboard_requests SET state = ?, finished = ? WHERE id = ?",
           ("pending" if states & {"pending", "failed"} else "done", time.time(), request_id))


def interrupted(tx: Tx) -> None:
    """Runs a stopped collector left half-way: their hosts are pending, said why."""
    tx.run("UPDATE offboard_hosts SET state = 'pending', detail = 'interrupted: the collector "
           "stopped during the run; submit the request again' WHERE state IN "
           "('queued', 'running')")
    tx.run("UPDATE offboard_requests SET state = 'pending' WHERE state = 'running'")


_REQ = "id, user_name, ticket, reason, effective, created, created_by, state, finished"


def _request_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    rid, user, ticket, reason, effective, created, by, state, finished = row
    return {"id": int(rid), "user": user, "ticket": ticket, "reason": reason,
            "effective": effective, "created": format_time(created), "created_by": by,
            "state": state, "finished": format_time(finished),
            "due": core.due_date(date.fromisoformat(effective)).isoformat()}


def get_request(tx: Tx, request_id: int) -> dict[str, Any]:
    row = tx.one(f"SELECT {_REQ} FROM offboard_requests WHERE id = ?",  # noqa: S608 constant
                 (request_id,))
    if row is None:
        raise NotFound(f"offboarding request {request_id} not found")
    out = _request_dict(row)
    out["hosts"] = [{"host": h, "state": s, "detail": d, "updated": format_time(u)}
                    for h, s, d, u in tx.all("SELECT host, state, detail, updated FROM "
                                             "offboard_hosts WHERE request_id = ? ORDER BY "
                                             "host", (request_id,))]
    return out


def listing(tx: Tx) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    requests = [_request_dict(r) for r in tx.all(
        f"SELECT {_REQ} FROM offboard_requests ORDER BY id DESC LIMIT 100")]  # noqa: S608
    purges = tx.all("SELECT day, state, detail FROM purge_runs ORDER BY day DESC LIMIT 10")
    return requests, purges


def claim_day(tx: Tx, day: str) -> bool:
    """Claim the purge of ``day`` (True), or find another collector has (False): one
    statement, so two collectors on one database cannot both win."""
    return tx.run("INSERT INTO purge_runs (day, started, state, detail) "
                  "SELECT ?, ?, 'running', '' WHERE NOT EXISTS "
                  "(SELECT 1 FROM purge_runs WHERE day = ?)", (day, time.time(), day)) == 1


def purge_done(tx: Tx, day: str, state: str, detail: str) -> None:
    tx.run("UPDATE purge_runs SET finished = ?, state = ?, detail = ? WHERE day = ?",
           (time.time(), state, detail, day))


# ---- root's runner (collector/offboard_runner.py) -----------------------------------------

RUNNER = "collector (offboarding runner)"  # the actor of the runner's lines in the log


def recheck(job: dict[str, Any], policy: Policy, today: date) -> str | None:
    """Why root's runner refuses a job read from the database (None: run it).  The web
    service checked it already, but the database is the service's: a compromised service (or
    anyone who can write the database) could have forged the row.  So everything the runner
    will use is judged again here, with the fleet's policy: HR's form rules
    (:func:`check_request`: a valid user name, ticket, reason, a date neither in the future
    nor too old), the policy's refusals (root, protected accounts, UID placeholders) and the
    name the ledger records as the operator.  The hosts are the fleet's, never the row's."""
    try:
        fields = {k: job.get(k) for k in ("user", "ticket", "reason", "effective")}
        if not all(isinstance(v, str) for v in fields.values()):
            return "the request's fields are not text"
        if any("\x00" in str(v) for v in fields.values()):
            return "a NUL character in the request"
        user, _ticket, _reason, _day = check_request(
            {k: str(v) for k, v in fields.items()}, today)
    except Invalid as exc:
        return exc.message
    said = core.refusal(policy, user)
    if said:
        return f"user: {said}"
    by = job.get("created_by")
    if not isinstance(by, str) or not by or len(by) > 200 or not by.isprintable():
        return "created_by: not a printable name of 1…200 characters"
    return None


def claim_next(tx: Tx, hosts: list[str]) -> dict[str, Any] | None:
    """Take the oldest queued request (``running`` from now on, its hosts the fleet's
    ``hosts``, queued), or None.  One conditional UPDATE: two runners on one database never
    take the same request."""
    while True:
        row = tx.one("SELECT id FROM offboard_requests WHERE state = 'queued' ORDER BY id "
                     "LIMIT 1")
        if row is None:
            return None
        if tx.run("UPDATE offboard_requests SET state = 'running' WHERE id = ? AND "
                  "state = 'queued'", (row[0],)) == 1:
            got = tx.one(f"SELECT {_REQ} FROM offboard_requests WHERE id = ?",  # noqa: S608
                         (row[0],))
            assert got is not None  # noqa: S101 updated in this transaction
            rid, user, ticket, reason, effective, _created, by, _state, _fin = got
            set_hosts(tx, int(rid), hosts)
            return {"id": int(rid), "user": user, "ticket": ticket, "reason": reason,
                    "effective": effective, "created_by": by}


def set_hosts(tx: Tx, request_id: int, hosts: list[str], state: str = "queued",
              detail: str = "") -> None:
    """The request's host rows are the fleet's (whatever rows it had are replaced)."""
    now = time.time()
    tx.run("DELETE FROM offboard_hosts WHERE request_id = ?", (request_id,))
    tx.many("INSERT INTO offboard_hosts (request_id, host, state, detail, updated) "
            "VALUES (?, ?, ?, ?, ?)", [(request_id, h, state, detail, now) for h in hosts])


def refuse_request(tx: Tx, request_id: int, hosts: list[str], reason: str) -> None:
    """Root's runner refused the job: every host ``refused`` with the reason, a log line."""
    set_hosts(tx, request_id, hosts, "refused", f"refused by the runner: {reason}"[:500])
    tx.run("UPDATE offboard_requests SET state = 'refused', finished = ? WHERE id = ?",
           (time.time(), request_id))
    auditlog.append(tx, RUNNER, "it", "offboarding.refused",
                    {"request": request_id, "reason": reason[:500]})


def stale(tx: Tx, before: float) -> int:
    """Requests a runner took and never finished (killed, the host rebooted), untouched since
    ``before``: their unfinished hosts are pending, said why; the number of requests."""
    ids = [int(r) for (r,) in tx.all(
        "SELECT id FROM offboard_requests WHERE state = 'running' AND NOT EXISTS (SELECT 1 "
        "FROM offboard_hosts WHERE request_id = offboard_requests.id AND updated >= ?)",
        (before,))]
    for rid in ids:
        tx.run("UPDATE offboard_hosts SET state = 'pending', detail = 'interrupted: the "
               "runner stopped during the run; submit the request again' WHERE request_id = ? "
               "AND state IN ('queued', 'running')", (rid,))
        finish(tx, rid)
    return len(ids)
