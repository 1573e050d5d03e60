"""The collector's HTTP API (Starlette): authentication, roles, limits, metrics, routes.

Handlers are thin: read the body under the size cap, validate by hand
(:mod:`baomi.collector.validate`), run one :mod:`baomi.collector.store` function in one
transaction on a database thread, answer JSON. Every refusal is a 4xx with one line.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from baomi.collector import alerts, audits, credentials, records_api, store, throttle, validate
from baomi.collector.alert_dispatch import Dispatcher
from baomi.collector.config import Config
from baomi.collector.db import Conflict, Database, DatabaseUnavailable, Refused
from baomi.collector.openapi import document
from baomi.collector.store import Forbidden, NotFound, Principal, Unauthorized
from baomi.collector.validate import Invalid
from baomi.collector.waiving import Waivers
from baomi.collector.web import Dashboard

log = logging.getLogger("baomi.collector")

PEOPLE = frozenset({"it", "auditor", "hr"})
READERS = frozenset({"it", "auditor"})
IT = frozenset({"it"})
AGENT = frozenset({"agent"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters of this process, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self.events = {"stored": 0, "duplicate": 0}
        self.batches: dict[int, int] = {}
        self.requests: dict[int, int] = {}
        self.latency = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def batch(self, status: int, seconds: float) -> None:
        self.batches[status] = self.batches.get(status, 0) + 1
        self.latency[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self, agents: dict[str, int], db_errors: int) -> str:
        name = "baomi_collector"
        lines = [f"# HELP {name}_events_total Events received in batches, by result.",
                 f"# TYPE {name}_events_total counter"]
        lines += [f'{name}_events_total{{result="{k}"}} {v}' for k, v in self.events.items()]
        lines += [f"# HELP {name}_batches_total Ingest batches answered, by HTTP status.",
                  f"# TYPE {name}_batches_total counter"]
        lines += [f'{name}_batches_total{{status="{k}"}} {v}'
                  for k, v in sorted(self.batches.items())]
        lines += [f"# HELP {name}_requests_total HTTP requests answered, by status.",
                  f"# TYPE {name}_requests_total counter"]
        lines += [f'{name}_requests_total{{status="{k}"}} {v}'
                  for k, v in sorted(self.requests.items())]
        lines += [f"# HELP {name}_batch_seconds Time to validate and store a batch.",
                  f"# TYPE {name}_batch_seconds histogram"]
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.latency, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_batch_seconds_bucket{{le="{le}"}} {running}')
        lines += [f"{name}_batch_seconds_sum {self.latency_sum}",
                  f"{name}_batch_seconds_count {self.latency_count}",
                  f"# HELP {name}_agents Enrolled agents by state.",
                  f"# TYPE {name}_agents gauge"]
        lines += [f'{name}_agents{{state="{k}"}} {v}' for k, v in agents.items()]
        lines += [f"# HELP {name}_db_errors_total Database errors (connection or statement).",
                  f"# TYPE {name}_db_errors_total counter", f"{name}_db_errors_total {db_errors}"]
        return "\n".join(lines) + "\n"


class RateLimiter:
    """A token bucket per agent (per process): ``rate`` requests/s, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[int, tuple[float, float]] = {}

    def wait(self, key: int, now: float) -> float:
        """0 if the request may go now (and take a token), else the seconds to wait."""
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


Handler = Callable[[Request], Awaitable[Response]]


def create_app(config: Config, database: Database) -> Starlette:
    """The ASGI application over ``database`` (migrated at start-up)."""
    metrics = Metrics()
    limiter = RateLimiter(config.rate_per_second, config.rate_burst)
    alerting = alerts.settings_of(config)
    dispatcher = Dispatcher(database, alerting)
    login_limits = throttle.limits_of(config)
    # decided at read time
    waivers = Waivers(config.policy, config.offboard_inventory, config.waiver_groups)
    metrics_token = ""
    if config.metrics_token.exists():
        metrics_token = config.metrics_token.read_text(encoding="utf-8").strip()

    async def body_of(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            raise ApiError(413, f"body larger than {config.max_body_bytes} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise ApiError(413, f"body larger than {config.max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise ApiError(400, "body: not valid JSON") from None

    async def who(request: Request, allowed: frozenset[str]) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200 \
                or not token.isascii() or not token.isprintable():
            raise ApiError(401, "missing bearer credential (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": "Bearer"})
        if metrics_token and hmac.compare_digest(token, metrics_token):
            principal = Principal("metrics", "prometheus")
        else:
            try:
                principal = await database.read(lambda tx: store.authenticate(tx, token))
            except Unauthorized as exc:
                raise ApiError(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        if principal.role not in allowed:
            raise ApiError(403, f"role {principal.role!r} may not use {request.url.path}")
        return principal

    def endpoint(fn: Handler, *, batch: bool = False) -> Handler:
        """``fn`` with every refusal turned into its status and one line; ``batch`` records
        the answer's status and time in the ingest metrics."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await fn(request)
            except ApiError as exc:
                response = JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)
            except Invalid as exc:
                response = JSONResponse({"error": exc.message}, exc.status)
            except Unauthorized as exc:
                response = JSONResponse({"error": str(exc)}, 401,
                                        headers={"WWW-Authenticate": "Bearer"})
            except Forbidden as exc:
                response = JSONResponse({"error": str(exc)}, 403)
            except NotFound as exc:
                response = JSONResponse({"error": str(exc)}, 404)
            except Conflict as exc:
                response = JSONResponse({"error": f"conflict: {exc}"}, 409)
            except Refused as exc:
                response = JSONResponse({"error": f"value refused by the database: {exc}"},
                                        422)
            except DatabaseUnavailable as exc:
                log.error("database: %s", exc)
                response = JSONResponse({"error": "database unavailable; retry later"}, 503,
                                        headers={"Retry-After": "5"})
            metrics.requests[response.status_code] = (
                metrics.requests.get(response.status_code, 0) + 1)
            if batch:
                metrics.batch(response.status_code, time.perf_counter() - started)
            return response

        return wrapped

    def path_id(request: Request, name: str) -> int:
        raw = request.path_params[name]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19 \
                or not 1 <= int(raw) <= validate.MAX_ID:
            raise ApiError(404, f"{name} {raw[:40]!r}: not found")
        return int(raw)

    # -- people --

    async def login(request: Request) -> Response:
        body = await body_of(request)
        user = validate.field(body, "user")
        password = validate.field(body, "password")
        if not isinstance(user, str) or not isinstance(password, str) or len(password) > 1024:
            raise Invalid("body: expected {\"user\": ..., \"password\": ...}")
        address = request.client.host if request.client else "unknown"
        try:
            role = await throttle.attempt(database, login_limits, user, password, address)
        except throttle.Locked as exc:
            raise ApiError(429, str(exc), {"Retry-After": str(int(exc.retry_after) + 1)}
                           ) from None
        if role is None:
            raise ApiError(401, "wrong user or password")
        session = await database.write(
            lambda tx: store.new_session(tx, user, role, config.session_hours))
        return JSONResponse(session)

    async def logout(request: Request) -> Response:
        principal = await who(request, PEOPLE)
        await database.write(lambda tx: store.end_session(tx, principal))
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        principal = await who(request, PEOPLE)
        return JSONResponse(await database.read(lambda tx: store.session_info(tx, principal)))

    async def users(request: Request) -> Response:
        principal = await who(request, IT)
        if request.method == "GET":
            return JSONResponse({"users": await database.read(store.list_users)})
        body = await body_of(request)
        user = validate.user_name(validate.field(body, "user"))
        password = validate.password(validate.field(body, "password"))
        role = validate.role(validate.field(body, "role"))
        pw_hash = await asyncio.get_running_loop().run_in_executor(
            None, credentials.hash_password, password)
        made = await database.write(lambda tx: store.add_user(tx, user, pw_hash, role,
                                                              by=principal.name))
        return JSONResponse(made, 201)

    async def user_delete(request: Request) -> Response:
        principal = await who(request, IT)
        user = request.path_params["user"]
        await database.write(lambda tx: store.delete_user(tx, user, principal.name))
        return Response(status_code=204)

    # -- enrolment --

    async def enrol_tokens(request: Request) -> Response:
        principal = await who(request, IT)
        if request.method == "GET":
            return JSONResponse({"tokens": await database.read(store.list_enrol_tokens)})
        body = await body_of(request)
        if not isinstance(body, dict):
            raise Invalid("body: expected a JSON object")
        host = body.get("host")
        if host is not None:
            validate.host_name(host)
        one_time = body.get("one_time", True)
        validate.boolean(one_time, "one_time")
        expires_in = body.get("expires_in")
        if expires_in is not None or not one_time:
            expires_in = validate.integer(86400 if expires_in is None else expires_in,
                                          "expires_in", 60, 30 * 86400)
        made = await database.write(lambda tx: store.new_enrol_token(
            tx, principal.name, host, one_time, expires_in))
        return JSONResponse(made, 201)

    async def enrol_token_delete(request: Request) -> Response:
        principal = await who(request, IT)
        token_id = path_id(request, "id")
        await database.write(lambda tx: store.revoke_enrol_token(tx, token_id, principal.name))
        return Response(status_code=204)

    async def enroll(request: Request) -> Response:
        body = await body_of(request)
        token = validate.field(body, "token")
        if not isinstance(token, str) or not token or len(token) > 200:
            raise ApiError(401, "token: missing enrolment token")
        host = validate.host_name(validate.field(body, "host"))
        made = await database.write(lambda tx: store.enroll(tx, token, host))
        return JSONResponse(made, 201)

    async def agents(request: Request) -> Response:
        await who(request, READERS)
        return JSONResponse({"agents": await database.read(store.list_agents)})

    async def agent_revoke(request: Request) -> Response:
        principal = await who(request, IT)
        agent_id = path_id(request, "id")
        return JSONResponse(await database.write(
            lambda tx: store.revoke_agent(tx, agent_id, principal.name)))

    # -- agents' writes --

    def limit(principal: Principal) -> None:
        wait = limiter.wait(principal.agent_id, time.monotonic())
        if wait:
            raise ApiError(429, f"agent {principal.agent_id}: more than "
                           f"{config.rate_per_second:g} requests/s",
                           {"Retry-After": str(max(1, round(wait)))})

    async def events(request: Request) -> Response:
        principal = await who(request, AGENT)
        limit(principal)
        batch = validate.parse_batch(await body_of(request))
        now = time.time()
        ack, alerted = await database.write(
            lambda tx: alerts.ingest(tx, principal.agent_id, batch, now, alerting,
                                     waivers.judge()))
        if alerted:
            dispatcher.wake()  # the syslog line at once, the webhook's first try
        metrics.events["stored"] += ack["stored"]
        metrics.events["duplicate"] += ack["duplicates"]
        return JSONResponse(ack)

    async def beat(request: Request) -> Response:
        principal = await who(request, AGENT)
        limit(principal)
        figures = validate.health(await body_of(request))
        now = time.time()
        return JSONResponse(await database.write(
            lambda tx: store.heartbeat(tx, principal.agent_id, figures, now)))

    # -- reading --

    async def hosts(request: Request) -> Response:
        await who(request, READERS)
        judge = waivers.judge()
        return JSONResponse({"hosts": await database.read(lambda tx: store.hosts(tx, judge))})

    async def findings(request: Request) -> Response:
        await who(request, READERS)
        query = validate.finding_query(dict(request.query_params))
        judge = waivers.judge()
        return JSONResponse(await database.read(lambda tx: store.find(tx, query, judge)))

    async def finding(request: Request) -> Response:
        await who(request, READERS)
        finding_id = path_id(request, "id")
        judge = waivers.judge()
        return JSONResponse(await database.read(
            lambda tx: store.finding(tx, finding_id, judge=judge)))

    async def ack(request: Request) -> Response:
        principal = await who(request, IT)
        finding_id = path_id(request, "id")
        comment = validate.text(validate.field(await body_of(request), "comment"), "comment",
                                validate.MAX_COMMENT, empty=False)
        done = await database.write(
            lambda tx: alerts.acknowledge(tx, finding_id, principal.name, comment))
        return JSONResponse(waivers.judge().mark(done))

    async def alert_list(request: Request) -> Response:
        await who(request, READERS)
        state, after, page = alerts.query(dict(request.query_params))
        return JSONResponse(await database.read(
            lambda tx: alerts.listing(tx, state, after, page)))

    async def summary(request: Request) -> Response:
        await who(request, READERS)
        judge = waivers.judge()
        return JSONResponse(await database.read(lambda tx: store.summary(tx, judge)))

    # -- operations --

    async def prometheus(request: Request) -> Response:
        await who(request, READERS | {"metrics"})
        by_state = await database.read(store.agents_by_state)
        return Response(metrics.render(by_state, database.errors),
                        media_type="text/plain; version=0.0.4")

    async def health(request: Request) -> Response:
        try:
            await database.read(lambda tx: tx.one("SELECT 1"))
        except DatabaseUnavailable:
            return JSONResponse({"ok": False}, 503)
        return JSONResponse({"ok": True})

    openapi = document()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    api = "/api/v1"
    routes = [
        Route(f"{api}/login", endpoint(login), methods=["POST"]),
        Route(f"{api}/logout", endpoint(logout), methods=["POST"]),
        Route(f"{api}/me", endpoint(me), methods=["GET"]),
        Route(f"{api}/users", endpoint(users), methods=["GET", "POST"]),
        Route(f"{api}/users/{{user}}", endpoint(user_delete), methods=["DELETE"]),
        Route(f"{api}/enrolment-tokens", endpoint(enrol_tokens), methods=["GET", "POST"]),
        Route(f"{api}/enrolment-tokens/{{id}}", endpoint(enrol_token_delete),
              methods=["DELETE"]),
        Route(f"{api}/enroll", endpoint(enroll), methods=["POST"]),
        Route(f"{api}/agents", endpoint(agents), methods=["GET"]),
        Route(f"{api}/agents/{{id}}/revoke", endpoint(agent_revoke), methods=["POST"]),
        Route(f"{api}/events", endpoint(events, batch=True), methods=["POST"]),
        Route(f"{api}/heartbeat", endpoint(beat), methods=["POST"]),
        Route(f"{api}/hosts", endpoint(hosts), methods=["GET"]),
        Route(f"{api}/findings", endpoint(findings), methods=["GET"]),
        Route(f"{api}/findings/{{id}}", endpoint(finding), methods=["GET"]),
        Route(f"{api}/findings/{{id}}/ack", endpoint(ack), methods=["POST"]),
        Route(f"{api}/summary", endpoint(summary), methods=["GET"]),
        Route(f"{api}/alerts", endpoint(alert_list), methods=["GET"]),
        Route(f"{api}/health", endpoint(health), methods=["GET"]),
        Route(f"{api}/openapi.json", openapi_json, methods=["GET"]),
        Route("/metrics", endpoint(prometheus), methods=["GET"]),
    ]
    routes += records_api.routes(database, who, endpoint, body_of, api)  # system of record
    routes += audits.routes(database, who, endpoint, body_of, api)  # audit history

    dashboard = Dashboard(config, database, waivers)
    routes += dashboard.routes  # the web dashboard and HR's offboarding (collector/web)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await asyncio.get_running_loop().run_in_executor(None, database.migrate)
        await database.write(lambda tx: store.bootstrap_admin(
            tx, config.admin_user, config.admin_password_scrypt))
        dispatcher.start()  # alerts: syslog, webhook retries, the silent-agent sweep
        async with dashboard.running():  # offboarding runs and the daily purge
            yield
        await dispatcher.stop()
        database.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", "not found")
        return JSONResponse({"error": f"{request.method} {request.url.path}: {detail}"},
                            status, headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error (a bug; see the collector's log)"}, 500)

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found,
                                         Exception: server_error})
