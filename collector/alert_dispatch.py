"""The alert dispatcher: one asyncio task per collector process (see :mod:`.alerts`).

It wakes when an ingest made an alert (:meth:`Dispatcher.wake`), when the next retry is due,
and every few seconds for the silent-agent sweep. Database steps run in transactions on the
database's threads, the syslog send and the webhook POST on the default executor: the event
loop never blocks. A failure of one pass is logged and the next pass tries again; nothing is
lost, because the outbox row stays pending until a 2xx answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import time
from urllib.parse import urlsplit

from baomi.collector import alerts
from baomi.collector.db import Database, DatabaseUnavailable

log = logging.getLogger("baomi.collector.alerts")
TIMEOUT = 10.0


def post(url: str, body: str, alert_id: int) -> str | None:
    """POST ``body`` as JSON; None on a 2xx answer, else one line saying why not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=TIMEOUT)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=TIMEOUT)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("POST", path, body.encode(), {
            "Content-Type": "application/json", "User-Agent": "baomi-collector",
            "Idempotency-Key": f"baomi-alert-{alert_id}"})
        answer = conn.getresponse()
        answer.read(65536)
        if 200 <= answer.status < 300:
            return None
        return f"HTTP {answer.status} {answer.reason}"
    except (OSError, http.client.HTTPException) as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    finally:
        conn.close()


class Dispatcher:
    """Delivers the outbox of ``database`` with ``settings`` until :meth:`stop`."""

    def __init__(self, database: Database, settings: alerts.Settings) -> None:
        self.database = database
        self.settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._syslog_failing = False
        # sweep often enough that a silent agent is noted within a tenth of the limit
        self.sweep_every = max(1.0, min(60.0, settings.silent_minutes * 6))
        self._next_sweep = 0.0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            delay = 1.0
            try:
                delay = await self.once()
            except DatabaseUnavailable as exc:
                log.warning("alerts: database unavailable: %s", exc)
            except Exception:
                log.exception("alerts: dispatcher pass failed (retried)")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, delay))

    async def once(self) -> float:
        """One pass: sweep if due, syslog lines, due webhooks; seconds until the next."""
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_every
            made = await self.database.write(
                lambda tx: alerts.sweep(tx, self.settings, time.time()))
            if made:
                log.warning("alerts: %d agent(s) silent longer than %g min", made,
                            self.settings.silent_minutes)
        await self._syslog()
        await self._webhooks()
        due = await self.database.read(alerts.next_due)
        wait = self._next_sweep - time.time()
        if due is not None:
            wait = min(wait, due - time.time())
        return min(wait, 5.0)

    async def _syslog(self) -> None:
        path = self.settings.syslog_socket
        if not path:
            return
        claimed = await self.database.write(alerts.syslog_due)
        if not claimed:
            return
        lines = [alerts.syslog_line(payload, aid) for aid, payload in claimed]
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, alerts.send_syslog, path, lines)
            self._syslog_failing = False
        except OSError as exc:
            if not self._syslog_failing:
                log.error("alerts: syslog socket %s: %s (retried)", path, exc)
            self._syslog_failing = True
            ids = [aid for aid, _ in claimed]
            await self.database.write(lambda tx: alerts.syslog_failed(tx, ids))

    async def _webhooks(self) -> None:
        url = self.settings.webhook
        if not url:
            return
        loop = asyncio.get_running_loop()
        while True:
            claimed = await self.database.write(lambda tx: alerts.webhook_due(tx, time.time()))
            if not claimed:
                return
            for index, (alert_id, attempts, body) in enumerate(claimed):
                error = await loop.run_in_executor(None, post, url, body, alert_id)
                now = time.time()
                retry_at = now + alerts.backoff(attempts + 1, self.settings.retry_max_seconds)
                if error is not None:
                    log.warning("alerts: webhook for alert %d failed (attempt %d): %s",
                                alert_id, attempts + 1, error)
                await self._finish(alert_id, error, now, retry_at)
                if error is not None:  # the receiver is down: the rest of this claim waits too
                    await self._release([a for a, _, _ in claimed[index + 1:]], retry_at)
                    return

    async def _finish(self, alert_id: int, error: str | None, now: float,
                      retry_at: float) -> None:
        await self.database.write(
            lambda tx: alerts.webhook_done(tx, alert_id, now, error, retry_at))

    async def _release(self, alert_ids: list[int], retry_at: float) -> None:
        await self.database.write(lambda tx: alerts.webhook_release(tx, alert_ids, retry_at))
