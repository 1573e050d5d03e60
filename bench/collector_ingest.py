"""Collector ingest benchmark: end-to-end events/s and p99 batch latency beside the raw insert
rate of the same rows into the same schema (the ceiling), SQLite and PostgreSQL, one run.

    .venv/bin/python bench/collector_ingest.py               # 1,000,000 events per backend
    .venv/bin/python bench/collector_ingest.py --events 40000 --backend sqlite   # smoke run

End to end: a real ``baomi collector serve`` process (uvicorn, TLS on loopback), 8 enrolled
agents each sending its share in batches of 500 from its own thread and keep-alive
connection, the CA pinned. Raw: the same rows, built before the clock starts, inserted by the
collector's own SQL (event log insert + current-state upsert, one transaction per 500 rows)
into a fresh database of the same schema, from one thread, no HTTP. Clients and server share
this machine's cores, as they would not in production: the figures are a floor.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baomi.collector import store  # noqa: E402
from baomi.collector.client import Client  # noqa: E402
from baomi.collector.db import Database  # noqa: E402
from baomi.collector.validate import finding_key, parse_time  # noqa: E402
from baomi.findings import SEVERITY_RANK  # noqa: E402
from tests.collector.pgcluster import private_cluster  # noqa: E402

CHECKS = ("ssh.permit_root_login", "usb.storage_module", "passwords.min_length",
          "firewall.default_policy", "sensitive_paths.mode")
SUBJECTS_PER_CHECK = 1000  # 5,000 findings per host: most events update a known finding


def event_json(seq: int) -> str:
    """One event as an agent would send it (every 10th resolves its finding)."""
    check = CHECKS[seq % len(CHECKS)]
    subject = f"/srv/clients/file-{(seq // len(CHECKS)) % SUBJECTS_PER_CHECK}"
    kind = "resolved" if seq % 10 == 0 else "finding"
    return (f'{{"id":"{uuid.uuid4()}","seq":{seq},"ts":"2026-12-02T10:{seq // 60 % 60:02d}:'
            f'{seq % 60:02d}+00:00","kind":"{kind}","finding":{{"check":"{check}",'
            f'"control":"{check.split(".")[0]}","clauses":["R-ACL","R-CLS"],"severity":"high",'
            f'"subject":"{subject}","expected":"0640 root:clients",'
            f'"found":"0644 alice:alice","details":{{"uid":1000}}}}}}')


def batches(first: int, count: int, size: int) -> Iterator[bytes]:
    for start in range(first, first + count, size):
        end = min(first + count, start + size)
        yield ('{"events":[' + ",".join(event_json(s) for s in range(start, end))
               + "]}").encode()


@contextmanager
def collector(folder: Path, database: str) -> Iterator[tuple[int, str]]:
    """A ``baomi collector serve`` process; (port, admin password)."""
    done = subprocess.run([sys.executable, "-m", "baomi.collector", "init", str(folder)],
                          capture_output=True, text=True, check=True)
    match = re.search(r"password \(shown once\): (\S+)", done.stdout)
    assert match
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "baomi.collector", "serve", str(folder),
                                "--db", database, "--listen", f"127.0.0.1:{port}",
                                "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = Client("127.0.0.1", port, str(folder / "ca.pem"), timeout=2)
                if probe.get("/api/v1/health").status == 200:
                    probe.close()
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("collector did not start") from None
                time.sleep(0.2)
        yield port, match.group(1)
    finally:
        process.terminate()
        process.wait(15)


def end_to_end(folder: Path, database: str, events: int, clients: int,
               size: int) -> dict[str, float]:
    with collector(folder, database) as (port, password):
        ca = str(folder / "ca.pem")
        admin = Client("127.0.0.1", port, ca)
        it = admin.post("/api/v1/login", {"user": "admin", "password": password}).body["token"]
        agents = []
        for i in range(clients):
            token = admin.post("/api/v1/enrolment-tokens", {}, token=it).body["token"]
            agents.append(admin.post("/api/v1/enroll", {"token": token,
                                                        "host": f"bench{i}"}).body["credential"])
        share = events // clients
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def run(credential: str) -> None:
            client = Client("127.0.0.1", port, ca, credential)
            mine = []
            for body in batches(1, share, size):
                started = time.perf_counter()
                answer = client.request("POST", "/api/v1/events", raw=body)
                mine.append(time.perf_counter() - started)
                if answer.status != 200:
                    errors.append(f"{answer.status} {answer.body}")
                    break
            client.close()
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=run, args=(a,)) for a in agents]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        if errors:
            raise SystemExit(f"ingest failed: {errors[0]}")
        listed = admin.get("/api/v1/agents", token=it).body["agents"]
        stored = sum(a["events"] for a in listed)
        acked = sum(a["acked_seq"] for a in listed)
        assert stored == acked == share * clients, (stored, acked)
        admin.close()
    latencies.sort()
    return {"events": share * clients, "seconds": seconds,
            "rate": share * clients / seconds,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000}


def raw_rows(events: int, clients: int, size: int
             ) -> list[tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """The rows end to end produces, per transaction: (agent, event rows, finding rows)."""
    import json

    out = []
    share = events // clients
    now = time.time()
    for agent in range(1, clients + 1):
        host = f"bench{agent - 1}"
        for body in batches(1, share, size):
            ev_rows, f_rows = [], []
            for e in json.loads(body)["events"]:
                f = e["finding"]
                ts = parse_time(e["ts"], "ts")
                resolved = e["kind"] == "resolved"
                ev_rows.append((agent, e["seq"], e["id"], host, ts, now, e["kind"],
                                finding_key(host, f["check"], f["subject"]), f["severity"],
                                f["found"], json.dumps(f["details"])))
                f_rows.append((host, f["check"], f["subject"], f["control"],
                               " " + " ".join(f["clauses"]) + " ", f["severity"],
                               SEVERITY_RANK[f["severity"]], f["expected"], f["found"],
                               json.dumps(f["details"]), "resolved" if resolved else "open",
                               ts, ts, ts if resolved else None))
            out.append((agent, ev_rows, f_rows))
    return out


def raw_insert(database: str, events: int, clients: int, size: int) -> float:
    rows = raw_rows(events, clients, size)
    db = Database(database, pool=1)
    try:
        db.migrate()
        started = time.perf_counter()
        for _, ev_rows, f_rows in rows:
            def write(tx: Any, ev: Any = ev_rows, fr: Any = f_rows) -> None:
                tx.many(store.INSERT_EVENT, ev)
                tx.many(store.UPSERT_FINDING, fr)
            db.transaction(write)
        seconds = time.perf_counter() - started
    finally:
        db.close()
    return sum(len(r[1]) for r in rows) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    results = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="baomi-bench-"))
        stack.callback(shutil.rmtree, work, True)
        backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
        cluster = stack.enter_context(private_cluster()) if "postgresql" in backends else None
        for backend in backends:
            def fresh(name: str, backend: str = backend) -> str:
                if backend == "sqlite":
                    return f"sqlite:///{work}/{name}.db"
                assert cluster is not None
                return cluster.new_database()

            e2e = end_to_end(work / f"c-{backend}", fresh("e2e"), args.events, args.clients,
                             args.batch)
            raw = raw_insert(fresh("raw"), args.events, args.clients, args.batch)
            results.append((backend, e2e, raw))
            print(f"{backend}: done", file=sys.stderr)
    print(f"\ncollector ingest: {args.events:,} events, {args.clients} clients, batches of "
          f"{args.batch}, TLS on loopback, {__import__('os').cpu_count()} cores shared by "
          "clients and server\n")
    header = (f"{'backend':<11} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'raw insert/s':>13} {'e2e/raw':>8}")
    print(header)
    print("-" * len(header))
    for backend, e2e, raw in results:
        print(f"{backend:<11} {e2e['rate']:>10,.0f} {e2e['p50']:>8.1f} {e2e['p99']:>8.1f} "
              f"{raw:>13,.0f} {e2e['rate'] / raw:>8.2f}")


if __name__ == "__main__":
    main()
