"""A small HTTPS JSON client for the collector's API (stdlib only; the CA file pinned).

Used by the tests, the benchmark and, later, the terminal commands. One instance keeps one
keep-alive connection; it is not thread-safe (use one per thread).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    def json(self) -> Any:
        return self.body


class Client:
    def __init__(self, host: str, port: int, ca_file: str, token: str | None = None,
                 timeout: float = 30.0, server_name: str | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.token = token
        self.server_name = server_name
        self.context = ssl.create_default_context(cafile=ca_file)
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                     context=self.context)
            self._conn.connect()
            # Without TCP_NODELAY a small request after a large one waits for a delayed ACK.
            assert self._conn.sock is not None  # noqa: S101 type narrowing
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                token: str | None = None, headers: dict[str, str] | None = None) -> Answer:
        """Send one request; ``raw`` bytes are sent as they are (for malformed-input tests)."""
        sent = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        data: bytes | None = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=sent)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # a keep-alive connection the server closed: one retry
                if attempt:
                    raise
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        parsed: Any = payload
        if answer_headers.get("content-type", "").startswith("application/json") and payload:
            parsed = json.loads(payload)
        elif payload:
            parsed = payload.decode("utf-8", "replace")
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(response.status, parsed, answer_headers)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)
