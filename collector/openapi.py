"""The OpenAPI 3.0 document of API v1, written by hand next to the handlers it describes.

Kept small with a few helpers; schemathesis runs against it in the tests, so a handler that
answers differently from this document fails there.
"""

from __future__ import annotations

from typing import Any

from baomi.clauses import CLAUSES
from baomi.findings import SEVERITY_RANK

JSON = "application/json"
S = dict[str, Any]


def _obj(props: S, required: tuple[str, ...] = (), extra: bool = True) -> S:
    schema: S = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _str(**kw: Any) -> S:
    return {"type": "string", **kw}


def _int(**kw: Any) -> S:
    return {"type": "integer", **kw}


_TIME = _str(format="date-time")
_NTIME = {**_TIME, "nullable": True}
_ERROR = {"description": "refused", "content": {JSON: {"schema": {"$ref": "#/components/"
                                                                  "schemas/Error"}}}}
_SEVERITY = _str(enum=list(SEVERITY_RANK))
_CLAUSE = _str(enum=list(CLAUSES))
_CHECK = _str(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", maxLength=128)
_HOST = _str(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_USER = _str(pattern=r"^[a-z_][a-z0-9_.-]{0,63}$")
_NO_NUL = r"^[^\x00]*$"  # text is stored as text: a NUL character is refused (422)


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(status: str, description: str, schema: S | None) -> S:
    if schema is None:
        return {status: {"description": description}}
    return {status: {"description": description, "content": {JSON: {"schema": schema}}}}


def _op(summary: str, ok: S, *, body: S | None = None, auth: bool = True,
        errors: tuple[int, ...] = (), params: list[S] | None = None) -> S:
    responses: S = dict(ok)
    codes = set(errors)
    if auth:
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        responses[str(code)] = _ERROR
    responses["503"] = _ERROR
    op: S = {"summary": summary, "responses": responses}
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_id(name: str = "id") -> S:
    return {"name": name, "in": "path", "required": True,
            "schema": _int(minimum=1, maximum=2**63 - 1)}


def _query(name: str, schema: S) -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema}


# null is the same as absent; a `finding` event needs clauses, severity, expected and found
# (docs/collector-api.md), a `resolved` event only check and subject.
_FINDING_IN = _obj({
    "check": _CHECK, "control": _str(nullable=True, maxLength=128, pattern=_NO_NUL),
    "clauses": {"type": "array", "items": _CLAUSE, "minItems": 1, "nullable": True},
    "severity": {"type": "string", "enum": [*SEVERITY_RANK, None], "nullable": True},
    "subject": _str(minLength=1, maxLength=1024, pattern=_NO_NUL),
    "expected": _str(maxLength=4096, nullable=True, pattern=_NO_NUL),
    "found": _str(maxLength=4096, nullable=True, pattern=_NO_NUL),
    "details": {"type": "object", "nullable": True}}, ("check", "subject"))

_SCHEMAS: S = {
    "Error": _obj({"error": _str()}, ("error",)),
    "Event": _obj({
        "id": _str(format="uuid"), "seq": _int(minimum=1, maximum=2**63 - 1), "ts": _TIME,
        "kind": _str(pattern=r"^[a-z][a-z0-9_.-]{0,63}$"),
        "finding": {**_FINDING_IN, "nullable": True},
        "data": {"type": "object", "nullable": True}},
        ("id", "seq", "ts", "kind")),
    "Ack": _obj({"acked_seq": _int(), "stored": _int(), "duplicates": _int(),
                 "max_seq": _int(), "missing": _int()},
                ("acked_seq", "stored", "duplicates", "max_seq", "missing")),
    "Agent": _obj({
        "id": _int(), "host": _str(), "state": _str(enum=["new", "active", "silent",
                                                          "revoked"]),
        "enrolled": _TIME, "last_seen": _NTIME, "acked_seq": _int(), "max_seq": _int(),
        "missing": _int(), "gaps": {"type": "array", "items": {
            "type": "array", "items": _int(), "minItems": 2, "maxItems": 2}},
        "events": _int(), "health": {"type": "object", "nullable": True},
        "heartbeat": _NTIME},
        ("id", "host", "state", "acked_seq", "max_seq", "missing", "gaps")),
    "Finding": _obj({
        "id": _int(), "host": _str(), "check": _str(), "control": _str(),
        "clauses": {"type": "array", "items": _str()}, "severity": _SEVERITY,
        "subject": _str(), "expected": _str(), "found": _str(), "details": {"type": "object"},
        "state": _str(enum=["open", "acknowledged", "resolved"]), "first_seen": _TIME,
        "last_seen": _TIME, "resolved_at": _NTIME,
        "ack": {"type": "object", "nullable": True, "properties": {
            "by": _str(), "at": _TIME, "comment": _str()}},
        "history": {"type": "array", "items": {"type": "object"}},
        # decided at read time by the policy's waivers (collector/waiving.py), never stored
        "waived": {"type": "boolean"},
        "waiver": {"type": "object", "nullable": True, "properties": {
            "index": _int(), "clause": _str(nullable=True), "control": _str(nullable=True),
            "hosts": {"type": "array", "items": _str()}, "reason": _str(),
            "approver": _str(), "expires": _str(format="date"),
            "expired": {"type": "boolean"}},
            "required": ["approver", "expires", "expired"]}},
        ("id", "host", "check", "control", "clauses", "severity", "subject", "state")),
    "Alert": _obj({
        "id": _int(), "finding_id": _int(), "kind": _str(enum=["finding", "silent"]),
        "host": _str(), "check": _str(), "severity": _SEVERITY,
        "clauses": {"type": "array", "items": _str()}, "created": _TIME,
        "finding_state": _str(enum=["open", "acknowledged", "resolved"]),
        "state": _str(enum=["open", "acknowledged"]),
        "webhook": _obj({"state": _str(enum=["pending", "delivered", "off"]),
                         "attempts": _int(), "next_try": _NTIME, "delivered": _NTIME,
                         "last_error": _str(nullable=True)}),
        "syslog": _obj({"state": _str(enum=["pending", "sent", "off"]), "at": _NTIME}),
        "ack": {"type": "object", "nullable": True, "properties": {
            "by": _str(), "at": _TIME, "comment": _str()}}},
        ("id", "finding_id", "kind", "host", "check", "severity", "state", "webhook",
         "syslog", "ack")),
    "Session": _obj({"token": _str(), "user": _str(), "role": _str(), "expires": _TIME},
                    ("token", "user", "role", "expires")),
    "User": _obj({"user": _str(), "role": _str(enum=["it", "auditor", "hr"]),
                  "created": _TIME}, ("user", "role")),
}


_STREAMS = ["escrow-retrievals", "offboarding", "accounts", "wipe"]  # escrow: its own path
_STREAM = {"name": "stream", "in": "path", "required": True, "schema": _str(enum=_STREAMS)}
_UID = _str(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_TEXT = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


def _line(limit: int) -> S:
    """One line of text: not blank, no control characters (records_api._text)."""
    return _str(minLength=1, maxLength=limit, pattern=_TEXT)


def _batch(record: S) -> S:
    return _obj({"records": {"type": "array", "minItems": 1, "maxItems": 500, "items": _obj(
        {"uid": _UID, "record": record}, ("uid", "record"))}}, ("records",))


# An escrow entry carries its secret sealed to the offline key, never in clear.
_ESCROW_ENTRY = _obj({k: _str(minLength=1) for k in (
    "id", "kind", "host", "subject", "created", "recipient", "sealed")},
    ("id", "kind", "host", "subject", "created", "recipient", "sealed"))
_PAGE = [_query("after", _int(minimum=0, maximum=2**62)),
         _query("limit", _int(minimum=0, maximum=5000))]


def _records_paths() -> S:
    """The system of record (collector/records_api.py; docs/collector-api.md)."""
    listing = _obj({"records": {"type": "array", "items": {"type": "object"}},
                    "next": _int(nullable=True)}, ("records", "next"))
    counts = _answer("200", "stored and existing", _obj(
        {"stored": _int(), "existing": _int()}, ("stored", "existing")))
    return {
        "/api/v1/records/{stream}": {
            "get": _op("A stream's records in order", _answer("200", "a page of records",
                                                               listing),
                       errors=(404, 422), params=[_STREAM, *_PAGE]),
            "post": _op("Append records, once per uid (same content again: existing)", counts,
                        body=_batch({"type": "object"}), errors=(404, 409),
                        params=[_STREAM])},
        "/api/v1/records/escrow": {
            "get": _op("Escrow entries in order, without their sealed secret", _answer(
                "200", "a page of entries", listing), errors=(422,), params=_PAGE),
            "post": _op("Escrow sealed entries, once per uid (the entry's id)", counts,
                        body=_batch(_ESCROW_ENTRY), errors=(409,))},
        "/api/v1/records/{stream}/{uid}": {"get": _op(
            "One record with the digest of what is stored", _answer("200", "the record", _obj(
                {"uid": _str(), "at": _str(), "by": _str(), "digest": _str(),
                 "record": {"type": "object"}}, ("uid", "digest", "record"))),
            errors=(404,), params=[{**_STREAM, "schema": _str(enum=["escrow", *_STREAMS])},
                                   {"name": "uid", "in": "path", "required": True,
                                    "schema": _UID}])},
        "/api/v1/escrow/recipient": {
            "get": _op("The escrow's public key line (null before keygen)", _answer(
                "200", "the key", _obj({"recipient": _str(nullable=True)}, ("recipient",)))),
            "put": _op("Keep the escrow's public key (once; another one is 409)", _answer(
                "200", "kept", _obj({"recipient": _str(), "stored": {"type": "boolean"}})),
                body=_obj({"recipient": _str(pattern=r"^BAOMI-ESCROW-RECIPIENT-1 [A-Za-z0-9+/=]+$",
                                             maxLength=200)}, ("recipient",)),
                errors=(409,))},
        "/api/v1/escrow/retrieve": {"post": _op(
            "The latest sealed entry (it only); the retrieval is recorded first",
            _answer("200", "the sealed entry", _obj({"entry": {"type": "object"},
                                                     "retrieval": _str()})),
            body=_obj({"kind": _line(100), "host": _line(253), "subject": _line(1000),
                       "reason": _line(1000), "operator": {"type": "object",
                                                           "maxProperties": 8}},
                      ("kind", "host", "subject", "reason")), errors=(404,))},
        "/api/v1/log": {"get": _op("The hash-chained log of human actions", _answer(
            "200", "a page of lines", _obj({"lines": {"type": "array", "items": {
                "type": "object"}}, "next": _int(nullable=True)}, ("lines", "next"))),
            errors=(422,), params=_PAGE)},
        "/api/v1/log/verify": {"get": _op("Verify the chain and every record's line", _answer(
            "200", "the verdict", _obj({"ok": {"type": "boolean"}, "lines": _int(),
                                        "head": _str(nullable=True),
                                        "problems": {"type": "array", "items": _str()}},
                                       ("ok", "lines", "problems"))))},
    }


def document() -> S:
    """The OpenAPI document served at /api/v1/openapi.json."""
    findings_params = [
        _query("host", _HOST), _query("clause", _CLAUSE), _query("severity", _SEVERITY),
        _query("state", _str(enum=["open", "acknowledged", "resolved"])),
        _query("since", _TIME), _query("check", _CHECK),
        _query("waived", _str(enum=["true", "false"])),
        _query("limit", _int(minimum=1, maximum=1000)),
        _query("after", _int(minimum=0, maximum=2**63 - 1))]
    agents_list = _obj({"agents": {"type": "array", "items": _ref("Agent")}}, ("agents",))
    paths: S = {
        "/api/v1/login": {"post": _op(
            "Log in: a session token", _answer("200", "a session", _ref("Session")),
            body=_obj({"user": _str(), "password": _str()}, ("user", "password")),
            auth=False, errors=(401, 429))},
        "/api/v1/logout": {"post": _op("End this session", _answer("204", "ended", None))},
        "/api/v1/me": {"get": _op("Who am I", _answer("200", "the session", _obj(
            {"user": _str(), "role": _str(), "expires": _NTIME})))},
        "/api/v1/users": {
            "get": _op("People with accounts", _answer("200", "users", _obj(
                {"users": {"type": "array", "items": _ref("User")}}))),
            "post": _op("Add a person", _answer("201", "added", _ref("User")),
                        body=_obj({"user": _USER, "password": _str(minLength=12,
                                                                   maxLength=1024),
                                   "role": _str(enum=["it", "auditor", "hr"])},
                                  ("user", "password", "role")), errors=(409,))},
        "/api/v1/users/{user}": {"delete": _op(
            "Remove a person (and their sessions)", _answer("204", "removed", None),
            errors=(404, 409, 422), params=[{"name": "user", "in": "path", "required": True,
                                        "schema": _str()}])},
        "/api/v1/enrolment-tokens": {
            "get": _op("Enrolment tokens (never the secret)", _answer("200", "tokens", _obj(
                {"tokens": {"type": "array", "items": {"type": "object"}}}))),
            "post": _op("Make an enrolment token", _answer("201", "the token (shown once)",
                                                          _obj({"id": _int(), "token": _str(),
                                                                "host": {**_str(),
                                                                         "nullable": True},
                                                                "one_time": {"type":
                                                                             "boolean"},
                                                                "expires": _NTIME})),
                        body=_obj({"host": {**_HOST, "nullable": True},
                                   "one_time": {"type": "boolean"},
                                   "expires_in": _int(minimum=60, maximum=30 * 86400,
                                                      nullable=True)}))},
        "/api/v1/enrolment-tokens/{id}": {"delete": _op(
            "Revoke an enrolment token", _answer("204", "revoked", None), errors=(404,),
            params=[_path_id()])},
        "/api/v1/enroll": {"post": _op(
            "Enrol an agent: its credential", _answer("201", "the agent's credential", _obj(
                {"agent_id": _int(), "host": _str(), "credential": _str()},
                ("agent_id", "host", "credential"))),
            body=_obj({"token": _str(), "host": _HOST}, ("token", "host")), auth=False,
            errors=(401, 403))},
        "/api/v1/agents": {"get": _op("Agents with their sequence state and gaps",
                                      _answer("200", "agents", agents_list))},
        "/api/v1/agents/{id}/revoke": {"post": _op(
            "Revoke an agent's credential", _answer("200", "the agent", _ref("Agent")),
            errors=(404,), params=[_path_id()])},
        "/api/v1/events": {"post": _op(
            "Ingest a batch of events (idempotent by event id)",
            _answer("200", "stored; the highest contiguous seq", _ref("Ack")),
            body=_obj({"events": {"type": "array", "items": _ref("Event"), "minItems": 1,
                                  "maxItems": 1000}}, ("events",)), errors=(409, 429))},
        "/api/v1/heartbeat": {"post": _op(
            "Agent health; work waiting for the host", _answer("200", "work", _obj(
                {"work": {"type": "array", "items": {"type": "object"}},
                 "acked_seq": _int()}, ("work", "acked_seq"))),
            body={"type": "object", "maxProperties": 64, "additionalProperties": {
                "nullable": True, "oneOf": [_str(maxLength=1024, pattern=_NO_NUL),
                                            {"type": "number"}, {"type": "boolean"}]}},
            errors=(429,))},
        "/api/v1/hosts": {"get": _op("Hosts with their agent and findings", _answer(
            "200", "hosts", _obj({"hosts": {"type": "array", "items": {"type": "object"}}})))},
        "/api/v1/findings": {"get": _op(
            "Findings (current state), filtered", _answer("200", "a page of findings", _obj(
                {"findings": {"type": "array", "items": _ref("Finding")},
                 "next": _int(nullable=True)}, ("findings", "next"))),
            errors=(422,), params=findings_params)},
        "/api/v1/findings/{id}": {"get": _op(
            "A finding with its history", _answer("200", "the finding", _ref("Finding")),
            errors=(404,), params=[_path_id()])},
        "/api/v1/findings/{id}/ack": {"post": _op(
            "Acknowledge a finding", _answer("200", "the finding", _ref("Finding")),
            body=_obj({"comment": _str(minLength=1, maxLength=2000, pattern=_NO_NUL)},
                      ("comment",)),
            errors=(404, 409), params=[_path_id()])},
        "/api/v1/alerts": {"get": _op(
            "Alerts (R-INC) with their delivery; open until the finding is acknowledged",
            _answer("200", "a page of alerts", _obj(
                {"alerts": {"type": "array", "items": _ref("Alert")},
                 "next": _int(nullable=True)}, ("alerts", "next"))),
            errors=(422,), params=[_query("state", _str(enum=["open", "acknowledged"])),
                                   _query("after", _int(minimum=0, maximum=2**63 - 1)),
                                   _query("limit", _int(minimum=1, maximum=1000))])},
        "/api/v1/summary": {"get": _op("Compliance by clause and by host", _answer(
            "200", "summary", _obj({"hosts": _int(),
                                    "by_clause": {"type": "array", "items": {"type": "object"}},
                                    "by_host": {"type": "array", "items": {"type": "object"}}},
                                   ("hosts", "by_clause", "by_host"))))},
        **_records_paths(),
        "/api/v1/health": {"get": _op("Does the database answer (no auth)", _answer(
            "200", "ok", _obj({"ok": {"type": "boolean"}})), auth=False)},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {
            "description": "text format", "content": {"text/plain": {"schema": _str()}}}})},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "baomi collector", "version": "1",
                 "description": "See docs/collector-api.md for the semantics."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
