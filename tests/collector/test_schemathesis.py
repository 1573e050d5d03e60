"""schemathesis against the served OpenAPI document: no 5xx, answers as documented.

Two runs against one real collector: as an `it` person (every endpoint but logout, which
would end the run's own session), then as an agent on the ingest endpoints. Examples are
bounded so the test stays around a minute; the seed is fixed so a failure reproduces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.collector.conftest import StartCollector


def schemathesis(url: str, ca: str, token: str, cwd: Path, *selection: str) -> str:
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", url,
               "--tls-verify", ca, "-H", f"Authorization: Bearer {token}",
               "--max-examples", "8", "--workers", "1", "--seed", "12",
               "--request-timeout", "30", *selection]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    failures = done.stdout[done.stdout.find("FAILURES"):]
    assert done.returncode == 0, failures[:6000] + done.stderr[-2000:]
    assert "passed" in done.stdout
    return done.stdout


@pytest.mark.timeout(900)
def test_openapi_document_holds(start_collector: StartCollector, tmp_path: Path) -> None:
    collector = start_collector("sqlite", rate_per_second=1000, rate_burst=1000)
    url = f"https://127.0.0.1:{collector.port}/api/v1/openapi.json"
    people = schemathesis(url, collector.ca, collector.it, tmp_path,
                          "--exclude-path", "/api/v1/logout")
    assert "Tested: 31" in people  # 32 operations in the document, logout left out
    agent = collector.enrol("ws-fuzz")
    ingest = schemathesis(url, collector.ca, agent.credential, tmp_path,
                          "--include-path-regex", "^/api/v1/(events|heartbeat)$")
    assert "Tested: 2" in ingest
    # The document describes every route but itself (27 paths, 32 operations).
    served = collector.client().get("/api/v1/openapi.json").body
    assert served["openapi"].startswith("3.0") and len(served["paths"]) == 27
