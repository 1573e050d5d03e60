"""The auth matrix: every endpoint × every kind of caller → 401, 403 or let through.

401 for a missing, malformed or unknown credential; 403 for a valid one of the wrong role;
anything else (2xx, 404, 422...) means the caller got past authentication and authorisation.
"""

from __future__ import annotations

from typing import Any

from tests.collector.conftest import Collector

API = "/api/v1"
EVERYONE = {"it", "auditor", "hr"}
READERS = {"it", "auditor"}
IT = {"it"}
AGENT = {"agent"}

# (method, path, body, roles allowed). Targets that change something name objects that do
# not exist, so an allowed call answers 404/422 without changing the server's state.
ENDPOINTS: list[tuple[str, str, Any, set[str]]] = [
    ("GET", f"{API}/me", None, EVERYONE),
    ("POST", f"{API}/logout", None, EVERYONE),
    ("GET", f"{API}/users", None, IT),
    ("POST", f"{API}/users", {"user": "x", "password": "short", "role": "it"}, IT),
    ("DELETE", f"{API}/users/nobody-here", None, IT),
    ("GET", f"{API}/enrolment-tokens", None, IT),
    ("POST", f"{API}/enrolment-tokens", {"expires_in": 1}, IT),
    ("DELETE", f"{API}/enrolment-tokens/999999", None, IT),
    ("GET", f"{API}/agents", None, READERS),
    ("POST", f"{API}/agents/999999/revoke", None, IT),
    ("POST", f"{API}/events", {"events": []}, AGENT),
    ("POST", f"{API}/heartbeat", {"spool_events": 0}, AGENT),
    ("GET", f"{API}/hosts", None, READERS),
    ("GET", f"{API}/findings", None, READERS),
    ("GET", f"{API}/findings/999999", None, READERS),
    ("POST", f"{API}/findings/999999/ack", {"comment": "x"}, IT),
    ("GET", f"{API}/summary", None, READERS),
    ("GET", "/metrics", None, READERS | {"metrics"}),
    ("GET", f"{API}/alerts", None, READERS),
    # The system of record (bodies that are refused, 422, or name nothing, 404).
    ("GET", f"{API}/records/offboarding", None, EVERYONE),
    ("POST", f"{API}/records/offboarding", {"records": []}, IT),
    ("GET", f"{API}/records/offboarding/nobody-uid", None, EVERYONE),
    ("GET", f"{API}/records/escrow", None, READERS),
    ("POST", f"{API}/records/escrow", {"records": []}, IT),
    ("GET", f"{API}/escrow/recipient", None, READERS),
    ("PUT", f"{API}/escrow/recipient", {"recipient": "bad"}, IT),
    ("POST", f"{API}/escrow/retrieve", {"kind": "k", "host": "h", "subject": "s",
                                        "reason": "r"}, IT),
    ("GET", f"{API}/log", None, READERS),
    ("GET", f"{API}/log/verify", None, READERS),
]

# Endpoints that take their secret in the body (or none at all).
OPEN = [("POST", f"{API}/login", {"user": "nobody", "password": "x"}, 401),
        ("POST", f"{API}/enroll", {"token": "bme_unknown", "host": "h"}, 401),
        ("GET", f"{API}/health", None, 200),
        ("GET", f"{API}/openapi.json", None, 200)]


def test_every_endpoint_refuses_the_wrong_caller(collector: Collector) -> None:
    agent = collector.enrol("ws-matrix")
    tokens = {"it": collector.it, "auditor": collector.user("auditor"),
              "hr": collector.user("hr"), "agent": agent.credential,
              "metrics": (collector.folder / "metrics.token").read_text().strip()}
    wrong = {"missing": {}, "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
             "unknown session": {"Authorization": "Bearer bms_" + "A" * 43},
             "unknown agent": {"Authorization": "Bearer bma_" + "B" * 43},
             "garbage": {"Authorization": "Bearer not-a-token"},
             "empty": {"Authorization": "Bearer "}}
    client = collector.client()
    documented = set(collector.client().get(f"{API}/openapi.json").body["paths"])
    covered = {path for _, path, _, _ in ENDPOINTS} | {path for _, path, _, _ in OPEN}
    covered.discard(f"{API}/openapi.json")  # the document does not list itself
    assert {p.replace("999999", "{id}").replace("nobody-here", "{user}")
            .replace("/records/offboarding", "/records/{stream}").replace("nobody-uid", "{uid}")
            for p in covered} == documented, "every documented path is in the matrix"
    seen: list[str] = []
    for method, path, body, allowed in ENDPOINTS:
        for name, headers in wrong.items():
            answer = client.request(method, path, body, token="", headers=headers)
            assert answer.status == 401, (method, path, name, answer.status, answer.body)
            assert answer.body["error"]
        for role in sorted(tokens):
            token = tokens[role]
            if path.endswith("/logout") and role in EVERYONE:
                token = collector.user(role) if role != "it" else collector.login(
                    "admin", collector.admin_password)
            answer = client.request(method, path, body, token=token)
            if role in allowed:
                assert answer.status not in (401, 403), (method, path, role, answer.body)
            else:
                assert answer.status == 403, (method, path, role, answer.status, answer.body)
                assert role in answer.body["error"] or "may not" in answer.body["error"]
            seen.append(f"{method} {path} {role} {answer.status}")
    assert len(seen) == len(ENDPOINTS) * len(tokens)
    for method, path, body, status in OPEN:
        assert client.request(method, path, body).status == status, (method, path)
