"""Scale-out: two collector processes on different ports share one PostgreSQL database.

Agents spread their batches over both (as a load balancer would), some batches reach both
at the same moment (a retry after a timeout through the other collector); the result is
every event once, every agent's acknowledgement at its last seq, one record per finding and
the same view from either collector.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.collector.conftest import Agent, StartCollector, event, serve

API = "/api/v1"


def test_two_collectors_one_postgresql(start_collector: StartCollector) -> None:
    first = start_collector("postgresql")
    second = serve(first.folder, first.admin_password, first.database)
    try:
        agents = [first.enrol(f"ws{i}") for i in range(6)]
        # Each agent gets a client per collector, as behind a balancer.
        routes = [(a, [a.client, second.client(a.credential)]) for a in agents]
        batches = 12
        plans: dict[int, list[list[dict[str, Any]]]] = {}
        for agent in agents:
            plans[agent.id] = [[event(b * 50 + i + 1, subject=f"file-{(b * 50 + i) % 40}",
                                      ts=f"2026-12-02T10:{b:02d}:{i:02d}Z")
                                for i in range(50)] for b in range(batches)]
        errors: list[str] = []

        def ship(agent: Agent, clients: list[Any]) -> None:
            for number, batch in enumerate(plans[agent.id]):
                body = {"events": batch}
                answers: list[Any] = []
                if number % 4 == 3:  # the same batch through both collectors at once
                    other = threading.Thread(target=lambda out=answers, sent=body: out.append(
                        clients[1].post(f"{API}/events", sent)))
                    other.start()
                    answers.append(clients[0].post(f"{API}/events", body))
                    other.join()
                else:
                    answers.append(clients[number % 2].post(f"{API}/events", body))
                errors.extend(f"{agent.host} batch {number}: {a.status} {a.body}"
                              for a in answers if a.status != 200)

        threads = [threading.Thread(target=ship, args=route) for route in routes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        views = []
        for collector in (first, second):
            it = collector.client(collector.it)
            listed = {a["host"]: a for a in it.get(f"{API}/agents").body["agents"]}
            for agent in agents:
                row = listed[agent.host]
                assert row["events"] == batches * 50, row  # every event once
                assert row["acked_seq"] == row["max_seq"] == batches * 50
                assert row["gaps"] == [] and row["missing"] == 0
            findings = it.get(f"{API}/findings?limit=1000").body["findings"]
            assert len(findings) == len(agents) * 40  # one record per host, check, subject
            identities = {(f["host"], f["check"], f["subject"]) for f in findings}
            assert len(identities) == len(findings)
            detail = it.get(f"{API}/findings/{findings[0]['id']}").body
            events_of_one = [h for h in detail["history"] if h["kind"] == "finding"]
            assert len(events_of_one) == batches * 50 // 40, detail["history"]
            views.append((it.get(f"{API}/hosts").body, findings,
                          it.get(f"{API}/summary").body))
        assert views[0] == views[1]  # one consistent view from either collector
        metrics = [c.client(c.it).get("/metrics").body for c in (first, second)]
        assert all('result="stored"}' in m for m in metrics)
    finally:
        second.stop()
