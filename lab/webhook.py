"""A webhook receiver on loopback for the alert tests and the demo: a real HTTP server that
records every JSON POST and can go down and come back on the same port (stdlib only)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records POSTed JSON bodies (``bodies``) and their ``Idempotency-Key`` (``keys``);
    ``on_post`` is called with each body (the demo prints it)."""

    def __init__(self, port: int, on_post: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.on_post = on_post
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                received.bodies.append(body)
                received.keys.append(self.headers.get("idempotency-key", ""))
                self.send_response(204)
                self.end_headers()
                if received.on_post is not None:
                    received.on_post(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
