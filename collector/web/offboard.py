"""HR's offboarding from the dashboard, and the collector's daily purge.

A request (user, ticket, reason, effective date) is checked here the way ``baomi offboard``
checks it (a valid, non-protected user; a date neither in the future nor too old), stored,
and then run by ``baomi offboard USER --limit HOST --json`` itself, one child process per
host of the collector's inventory (``offboard_inventory`` in collector.toml) with at most
:data:`PARALLEL` at once: the freeze is the command line's own code (pyinfra over SSH,
``controller/commands/offboard.py``, its ledger in ``offboard_state``), and each host's row
changes as its run ends, which the request page polls.  A host the run could not reach stays
``pending``: the next ``--purge-due`` run (and the agent, agent II) catches it up.

The purge (次月月底注销) runs from the collector: a scheduler inside the service (not a
systemd timer) starts ``baomi offboard --purge-due`` daily at ``purge_hour`` UTC, after
claiming the day in the database, so with several collectors behind one load balancer the
purge runs once, and a collector without systemd (the lab's supervisor) purges too.  The
per-host safety checks are the command's own.

On a collector deployed with systemd (``BAOMI_OFFBOARD_RUNNER=systemd`` in the service's
environment, written by ``baomi collector-deploy``) the service holds no SSH key: it records
the checked request as a ``queued`` job and touches ``offboard.trigger`` in its folder, and
root's ``baomi-offboard.service`` (:mod:`baomi.collector.offboard_runner`) checks it again,
runs it with the fleet's key and writes each host's outcome; the purge is the runner's too.
The form's checks use the policy copy in ``BAOMI_OFFBOARD_POLICY``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from baomi import offboarding as core
from baomi.collector import credentials, store
from baomi.collector.config import Config
from baomi.collector.db import Conflict, Database, Tx
from baomi.collector.store import NotFound, Principal
from baomi.collector.validate import Invalid
from baomi.collector.web.html import Html, badge, field, form, join, link, path, table, tag
from baomi.collector.web.i18n import t
from baomi.collector.web.offboard_core import (
    add_request,
    check_request,
    claim_day,
    finish,
    get_request,
    host_outcome,
    interrupted,
    json_documents,
    listing,
    purge_done,
    seconds_until,
    set_host,
    write_child_session,
)
from baomi.collector.web.view import View
from baomi.fleet_access import OFFBOARD_TRIGGER
from baomi.inventory import InventoryError
from baomi.inventory import read as read_inventory
from baomi.policy import PolicyError, default_policy_path
from baomi.policy import load as load_policy

log = logging.getLogger("baomi.collector.offboarding")
PARALLEL = 4
HOST_TIMEOUT = 900
PURGE_TIMEOUT = 3 * 3600
SERVICE_NAME = "collector (offboarding)"  # the actor of the child runs' records in the log
SESSION_HOURS = PURGE_TIMEOUT / 3600 + 1
RUNNER_ENV = "BAOMI_OFFBOARD_RUNNER"  # "systemd": root's runner runs the requests and the purge
POLICY_ENV = "BAOMI_OFFBOARD_POLICY"  # the policy the form checks with, in that mode


# ---- the service --------------------------------------------------------------------------

class Offboarding:
    """Pages, runs and the purge scheduler of one collector process."""

    def __init__(self, config: Config, database: Database) -> None:
        self.config = config
        self.db = database
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(PARALLEL)
        self.session_lock = asyncio.Lock()
        self.session_users = 0
        self.session_token: str | None = None
        # Root's runner (baomi-offboard.service) runs the requests: see the module's text.
        self.root_runner = os.environ.get(RUNNER_ENV) == "systemd"

    def problem(self) -> str | None:
        """Why this collector cannot offboard (a word of :mod:`i18n`), or None."""
        if self.root_runner:
            return None
        if not self.config.offboard_inventory:
            return "not_configured"
        if importlib.util.find_spec("pyinfra") is None:
            return "no_admin"
        return None

    def hosts(self) -> list[str]:
        try:
            return sorted(read_inventory(self.config.offboard_inventory))
        except InventoryError as exc:
            raise Invalid(f"collector.toml offboard_inventory: {exc}", 503) from None

    def policy_path(self) -> str:
        if self.root_runner and not self.config.offboard_policy:
            return (os.environ.get(POLICY_ENV) or os.environ.get("BAOMI_COLLECTOR_POLICY")
                    or default_policy_path())
        return self.config.offboard_policy or default_policy_path()

    def state_dir(self) -> Path:
        return Path(self.config.offboard_state or self.config.folder / "offboarding-state")

    def records_url(self) -> str | None:
        """The policy's collector URL when it keeps records at the collector, else None."""
        try:
            policy = load_policy(self.policy_path())
        except PolicyError as exc:
            raise Invalid(f"collector.toml offboard_policy: {exc}", 503) from None
        return policy.collector.url if policy.collector.records == "collector" else None

    @asynccontextmanager
    async def records_session(self) -> AsyncIterator[None]:
        """With ``collector.records: collector``, the child runs write the ledger through this
        collector's API: a session of the collector itself (role `it`, named
        :data:`SERVICE_NAME`, at most :data:`SESSION_HOURS`) in the child's 0700 state folder,
        shared by the runs going on at once (one ``session.json`` per folder) and removed and
        ended when the last of them ends.  The token never leaves the collector's own files;
        HR's session stays `hr` (the ledger names HR as the operator)."""
        async with self.session_lock:
            if self.session_users == 0:
                url = self.records_url()
                if url is not None:
                    made = await self.db.write(lambda tx: store.new_session(
                        tx, SERVICE_NAME, "it", SESSION_HOURS))
                    write_child_session(self.state_dir(), url, str(self.config.ca), made)
                    self.session_token = str(made["token"])
            self.session_users += 1
        try:
            yield
        finally:
            async with self.session_lock:
                self.session_users -= 1
                token = self.session_token
                if self.session_users == 0 and token is not None:
                    self.session_token = None
                    (self.state_dir() / "session.json").unlink(missing_ok=True)
                    await self.db.write(lambda tx: store.end_session(
                        tx, Principal("it", "", token=credentials.digest(token))))

    async def baomi(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        """``baomi ARGS`` as a child process with the collector's ledger folder."""
        env = {**os.environ, "BAOMI_STATE_DIR": str(self.state_dir())}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "baomi", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.done)

    def done(self, task: asyncio.Task[None]) -> None:
        """A background run that failed is logged (its hosts stay as the database says)."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("offboarding run failed: %s", task.exception())

    async def run_host(self, request_id: int, req: dict[str, Any], host: str) -> None:
        async with self.slots:
            await self.db.write(lambda tx: set_host(tx, request_id, host, "running", ""))
            try:
                code, out, err = await self.baomi(
                    # --name=VALUE: a ticket or reason starting with '-' stays a value
                    ["offboard", req["user"], f"--ticket={req['ticket']}",
                     f"--reason={req['reason']}", f"--effective={req['effective']}",
                     f"--inventory={self.config.offboard_inventory}",
                     f"--policy={self.policy_path()}", f"--limit={host}",
                     f"--operator={req['created_by']} (dashboard)", "--json"], HOST_TIMEOUT)
                state, detail = host_outcome(host, code, out, err)
            except TimeoutError:
                state, detail = "pending", f"no answer within {HOST_TIMEOUT} s"
            await self.db.write(lambda tx: set_host(tx, request_id, host, state, detail))

    async def run_request(self, request_id: int) -> None:
        req = await self.db.read(lambda tx: get_request(tx, request_id))
        try:
            async with self.records_session():
                await asyncio.gather(*(self.run_host(request_id, req, h["host"])
                                       for h in req["hosts"]))
        except Invalid as exc:  # the policy stopped loading since the request was made
            said = exc.message

            def all_pending(tx: Tx) -> None:
                for h in req["hosts"]:
                    set_host(tx, request_id, h["host"], "pending", said)

            await self.db.write(all_pending)
        await self.db.write(lambda tx: finish(tx, request_id))

    async def purge_once(self, today: date) -> dict[str, Any] | None:
        """Claim ``today`` and run ``--purge-due``; None when another collector has it."""
        day = today.isoformat()
        try:
            claimed = await self.db.write(lambda tx: claim_day(tx, day))
        except Conflict:  # PostgreSQL: another collector inserted the day at the same moment
            claimed = False
        if not claimed:
            return None
        try:
            async with self.records_session():
                code, out, err = await self.baomi(
                    ["offboard", "--purge-due", f"--now={day}",
                     f"--inventory={self.config.offboard_inventory}",
                     f"--policy={self.policy_path()}", "--operator=collector (daily purge)",
                     "--json"], PURGE_TIMEOUT)
        except TimeoutError:
            code, out, err = 1, "", f"no answer within {PURGE_TIMEOUT} s"
        except Invalid as exc:
            code, out, err = 1, "", exc.message
        # --purge-due prints the catch-up freezes' reports first, then its own
        events: list[dict[str, Any]] = next((d["events"] for d in reversed(json_documents(out))
                       if isinstance(d.get("events"), list)), [])
        counts: dict[str, int] = {}
        for e in events:
            counts[str(e.get("state"))] = counts.get(str(e.get("state")), 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) \
            or (err.strip().splitlines() or ["nothing frozen"])[-1][:500]
        state = "ok" if code == 0 else "attention"
        await self.db.write(lambda tx: purge_done(tx, day, state, detail))
        return {"day": day, "state": state, "detail": detail, "events": events}

    async def purge_loop(self) -> None:
        """Daily at ``purge_hour``; a failed day (e.g. the database away) is logged and the
        next day's run catches it up (``--purge-due`` purges whatever is due by then)."""
        while True:
            await asyncio.sleep(seconds_until(self.config.purge_hour, datetime.now(UTC)))
            try:
                await self.purge_once(datetime.now(UTC).date())
            except Exception as exc:  # the scheduler must outlive one bad day
                log.error("daily purge failed: %s", exc)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        if self.root_runner:  # root's runs outlive this process; the runner does the purge
            yield
            return
        await self.db.write(interrupted)
        if self.problem() is None:
            self.spawn(self.purge_loop())
        try:
            yield
        finally:
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                with suppress(asyncio.CancelledError, Exception):
                    await task

    # ---- pages ----------------------------------------------------------------------------

    async def create(self, db: Database, v: View, request: Request,
                     form_: dict[str, str]) -> Response:
        if self.problem():
            raise Invalid(t(v.lang, self.problem() or "not_configured"), 503)
        user, ticket, reason, day = check_request(form_, datetime.now(UTC).date())
        try:
            refusal = core.refusal(load_policy(self.policy_path()), user)
        except PolicyError as exc:
            raise Invalid(f"collector.toml offboard_policy: {exc}", 503) from None
        if refusal:
            raise Invalid(f"user: {refusal}", 422)
        if self.root_runner:
            request_id = await db.write(lambda tx: add_request(tx, user, ticket, reason, day,
                                                               v.who, [], state="queued"))
            self.trigger()
            return RedirectResponse(path("offboarding", str(request_id)), 303)
        hosts = self.hosts()
        request_id = await db.write(lambda tx: add_request(tx, user, ticket, reason, day,
                                                           v.who, hosts))
        self.spawn(self.run_request(request_id))
        return RedirectResponse(path("offboarding", str(request_id)), 303)

    def trigger(self) -> None:
        """Wake root's runner (``baomi-offboard.path`` watches the file; its content is never
        read). A failure here only delays the run to the runner's timer."""
        try:
            fd = os.open(self.config.folder / OFFBOARD_TRIGGER,
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{datetime.now(UTC).isoformat()}\n")
        except OSError as exc:
            log.warning("offboarding trigger not written (the runner's timer will take the "
                        "request): %s", exc)

    async def list_page(self, db: Database, v: View, request: Request,
                        form_: dict[str, str]) -> Response:
        lang = v.lang
        requests, purges = await db.read(listing)
        parts: list[object] = []
        problem = self.problem()
        if problem:
            parts.append(tag("p", t(lang, problem), class_="notice", id="offboard-problem"))
        elif v.who.role in ("it", "hr"):
            parts += [tag("h2", t(lang, "new_request")), form(
                "/offboarding", v.csrf,
                [field(t(lang, "user"), "user"), field(t(lang, "ticket"), "ticket"),
                 field(t(lang, "reason"), "reason", textarea=True),
                 field(t(lang, "effective"), "effective", "date",
                       datetime.now(UTC).date().isoformat())],
                t(lang, "start"), id_="offboard-form")]
        rows = [[link(path("offboarding", str(r["id"])), f"#{r['id']}"), r["user"],
                 r["ticket"], r["effective"], r["due"], r["created_by"], badge(r["state"])]
                for r in requests]
        parts += [tag("h2", t(lang, "requests")),
                  table(["#", t(lang, "user"), t(lang, "ticket"), t(lang, "effective"),
                         t(lang, "due"), t(lang, "created_by"), t(lang, "state")], rows,
                        id_="requests"),
                  tag("h2", t(lang, "purges")),
                  tag("p", t(lang, "purge_schedule", hour=self.config.purge_hour)),
                  table([t(lang, "day"), t(lang, "state"), t(lang, "detail")],
                        [[d, badge(s), x] for d, s, x in purges], id_="purges")]
        return v.page(t(lang, "offboarding"), join(parts))

    async def _request(self, db: Database, request: Request) -> dict[str, Any]:
        raw = request.path_params["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise NotFound(f"offboarding request {raw[:40]!r} not found")
        return await db.read(lambda tx: get_request(tx, int(raw)))

    async def request_page(self, db: Database, v: View, request: Request,
                           form_: dict[str, str]) -> Response:
        lang = v.lang
        req = await self._request(db, request)
        facts = [(t(lang, "user"), req["user"]), (t(lang, "ticket"), req["ticket"]),
                 (t(lang, "reason"), req["reason"]), (t(lang, "effective"), req["effective"]),
                 (t(lang, "due"), req["due"]), (t(lang, "created_by"), req["created_by"]),
                 (t(lang, "state"), badge(req["state"]))]
        rows = [[x["host"], badge(x["state"]), x["detail"], x["updated"]]
                for x in req["hosts"]]
        body = join([
            tag("dl", join(join([tag("dt", k), tag("dd", val)]) for k, val in facts)),
            tag("h2", t(lang, "progress")),
            table([t(lang, "host"), t(lang, "state"), t(lang, "detail"), t(lang, "when")],
                  rows, id_="progress"),
            Html(f'<script src="/static/progress.js" data-url="'
                 f'{path("offboarding", str(req["id"]), "progress.json")}"></script>'),
        ])
        return v.page(f"{t(lang, 'request')} #{req['id']} · {req['user']}", body)

    async def progress(self, db: Database, v: View, request: Request,
                       form_: dict[str, str]) -> Response:
        return JSONResponse(await self._request(db, request),
                            headers={"Cache-Control": "no-store"})
