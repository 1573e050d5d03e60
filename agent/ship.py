"""Shipping the spool to the collector (docs/collector-api.md), and enrolment.

HTTP is the standard library's ``http.client`` over ``ssl`` with the collector's private CA
pinned (nothing else is trusted), one kept-alive connection, ``TCP_NODELAY``.  The shipper
thread sleeps on the spool's condition: a spooled event wakes it and goes at once when no
batch was answered in the last :data:`WINDOW` (tens of milliseconds); in a burst, each
batch waits a window after the previous answer, so the burst gathers into few batches (and
few collector commits) without delaying a lone finding.
It sends everything above the last acknowledged sequence in order (the spooled JSON bodies as
they are: no decode and re-encode), and deletes what the answer acknowledges.
With nothing to send it wakes every ``ship_interval_seconds`` (the idle tick) for a heartbeat.
While the collector is away it backs off exponentially with jitter (capped at
:data:`BACKOFF_CAP` seconds) and the spool holds everything.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from baomi.agent.spool import Spool

WINDOW = 0.02
BACKOFF_BASE = 0.5
BACKOFF_CAP = 15.0
TIMEOUT = 15.0


class CollectorError(Exception):
    """The collector could not be reached or refused a request; one line saying why."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Client:
    """A kept-alive HTTPS connection to one collector, trusting only its CA file."""

    def __init__(self, url: str, ca_file: str | None, credential: str | None = None,
                 timeout: float = TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"collector URL {url!r}: expected https://HOST[:PORT]")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.credential = credential
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.context)
            conn.connect()
            assert conn.sock is not None  # noqa: S101 type narrowing after connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def _send(self, path: str, data: bytes,
              headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """One request; a kept-alive connection the server closed meanwhile (idle timeout)
        is replaced once (a batch sent twice is stored once: events are idempotent)."""
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request("POST", self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp, resp.read()
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise CollectorError(f"{self.url}: TLS certificate not trusted "
                                     f"({exc.verify_message})") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if not (reused and attempt == 1):
                    raise CollectorError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
        """POST JSON (a dict, or a body already encoded), return the JSON answer;
        :class:`CollectorError` for anything else."""
        data = body if isinstance(body, bytes) else json.dumps(
            body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        resp, raw = self._send(path, data, headers)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if resp.status >= 300 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            retry = resp.getheader("Retry-After")
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            raise CollectorError(f"{self.url}{path}: HTTP {resp.status}: "
                                 f"{error or raw[:200].decode(errors='replace')}", resp.status,
                                 float(retry) if retry and retry.isdigit() else None)
        return answer


def enroll(url: str, token: str, host: str, ca_file: str | None) -> dict[str, Any]:
    """Trade an enrolment token for the agent's credential (shown once by the collector)."""
    client = Client(url, ca_file)
    try:
        answer = client.post("/api/v1/enroll", {"token": token, "host": host})
    finally:
        client.close()
    if not isinstance(answer.get("credential"), str) or "agent_id" not in answer:
        raise CollectorError(f"{url}: enrolment answer without a credential")
    return answer


@dataclass
class ShipStatus:
    """What ``baomi agent status`` shows about shipping (written by the shipper thread)."""

    acked_seq: int = 0
    reachable: bool | None = None
    last_ok: float | None = None
    last_error: str | None = None
    sent: int = 0


def backoff(attempt: int) -> float:
    """Exponential with jitter: in [d/2, d] for d = base·2^attempt capped (no thundering herd
    of agents all retrying at once after a collector restart)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 16))
    jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 jitter, not a secret
    return delay * jitter


class Shipper(threading.Thread):
    """Sends the spool in order; deletes only what the collector acknowledged."""

    def __init__(self, spool: Spool, client: Client, batch_size: int, idle_tick: float,
                 health: Callable[[], dict[str, Any]]) -> None:
        super().__init__(name="baomi-shipper", daemon=True)
        self.spool = spool
        self.client = client
        self.batch_size = min(batch_size, 1000)  # the API's limit per batch
        self.idle_tick = idle_tick
        self.health = health
        self.status = ShipStatus(acked_seq=spool.depth().acked_seq)
        self.stopping = threading.Event()
        self.last_sent = 0.0  # when the last batch was answered (pacing in a burst)

    def stop(self) -> None:
        self.stopping.set()
        with self.spool.appended:
            self.spool.appended.notify_all()

    def run(self) -> None:
        attempt = 0
        next_heartbeat = 0.0
        self.last_sent = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = time.monotonic() + self.idle_tick
                while self.ship_once():
                    pass
                attempt = 0
                self.spool.wait(self.status.acked_seq,
                                max(0.0, next_heartbeat - time.monotonic()))
                pace = self.last_sent + WINDOW - time.monotonic()
                if pace > 0 and not self.stopping.is_set():
                    self.stopping.wait(pace)  # in a burst: at most one batch per window
            except CollectorError as exc:
                self.status.reachable = exc.status != 0
                self.status.last_error = str(exc)
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                attempt += 1
                self.stopping.wait(delay)
            except Exception as exc:  # the thread must survive anything (e.g. a full disk)
                self.status.last_error = f"shipper: {type(exc).__name__}: {exc}"
                self.stopping.wait(backoff(attempt))
                attempt += 1
        self.client.close()

    def _ok(self, answer: dict[str, Any]) -> None:
        acked = answer.get("acked_seq")
        if isinstance(acked, int) and acked > 0:
            self.spool.ack(acked)
            self.status.acked_seq = max(self.status.acked_seq, acked)
        self.status.reachable = True
        self.status.last_ok = time.time()
        self.status.last_error = None

    def _heartbeat(self) -> None:
        self._ok(self.client.post("/api/v1/heartbeat", self.health()))

    def ship_once(self) -> bool:
        """Send one batch; True when more may be waiting."""
        first, last, bodies = self.spool.raw_batch(self.status.acked_seq, self.batch_size)
        if not bodies:
            return False
        body = b'{"events":[' + b",".join(b.encode() for b in bodies) + b"]}"
        answer = self.client.post("/api/v1/events", body)
        self.last_sent = time.monotonic()
        before = self.status.acked_seq
        self._ok(answer)
        self.status.sent += len(bodies)
        if self.status.acked_seq <= before:
            # Stored but not contiguous (should not happen: we send in order): do not spin.
            raise CollectorError(f"collector acknowledged {answer.get('acked_seq')} after "
                                 f"events {first}…{last}", 200)
        return len(bodies) == self.batch_size
