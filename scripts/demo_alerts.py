#!/usr/bin/env python3
"""The demo's alert step (R-INC): a collector on loopback with a webhook receiver the demo
starts and a syslog socket it binds; a critical finding alerts while the receiver is down
(syslog at once, the webhook retried), the receiver comes up and gets it; an agent that stays
silent becomes a finding itself; the alert is acknowledged.

    scripts/demo_alerts.py DIR      (DIR: a new folder for the demo's collector; removed after)

Real processes throughout: ``baomi collector init`` and ``serve`` (TLS on 127.0.0.1), a real
HTTP receiver (baomi.lab.webhook), a unix datagram socket standing in for /dev/log.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baomi.collector.client import Client
from baomi.lab.webhook import Receiver

API = "/api/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(probe: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise SystemExit("demo_alerts: timed out")
        time.sleep(0.2)
    return value


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def main() -> int:
    folder = Path(sys.argv[1])
    receiver = Receiver(free_port(), lambda body: say(
        f"webhook receiver got alert {body['alert_id']} ({body['clause']}): "
        f"{body['finding']['severity']} {body['finding']['check']} on "
        f"{body['finding']['host']}"))
    done = subprocess.run([sys.executable, "-m", "baomi.collector", "init", str(folder)],
                          capture_output=True, text=True, check=True)
    found = re.search(r"password \(shown once\): (\S+)", done.stdout)
    assert found  # noqa: S101 init always prints it
    config = folder / "collector.toml"
    text = config.read_text()
    for key, value in (("alert_webhook", f'"{receiver.url}"'),
                       ("alert_syslog_socket", f'"{folder}/log.sock"'),
                       ("alert_min_severity", '"high"'), ("agent_silent_minutes", "0.1"),
                       ("alert_retry_max_seconds", "2")):
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    config.write_text(text)
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(folder / "log.sock"))
    syslog.settimeout(15)
    port = free_port()
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "baomi.collector", "serve", str(folder),
                               "--listen", f"127.0.0.1:{port}", "--log-level", "error"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        anon = Client("127.0.0.1", port, str(folder / "ca.pem"))
        until(lambda: _healthy(anon))
        token = anon.post(f"{API}/login", {"user": "admin", "password": found.group(1)}
                          ).body["token"]
        it = Client("127.0.0.1", port, str(folder / "ca.pem"), token)
        say(f"collector on https://127.0.0.1:{port}{API}; webhook {receiver.url} (down for "
            "now); alert_min_severity high; agents silent > 6 s are a finding")
        agents = {}
        for host in ("demo-srv", "demo-ws"):
            enrol = it.post(f"{API}/enrolment-tokens", {"host": host}).body["token"]
            made = anon.post(f"{API}/enroll", {"token": enrol, "host": host}).body
            agents[host] = Client("127.0.0.1", port, str(folder / "ca.pem"),
                                  made["credential"])
        srv = agents["demo-srv"]
        srv.post(f"{API}/events", {"events": [{
            "id": "6f0c1c2e-0000-4000-8000-000000000001", "seq": 1,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "kind": "finding",
            "finding": {"check": "ssh.permit_root_login", "control": "ssh",
                        "clauses": ["R-TLS", "R-PRV"], "severity": "critical",
                        "subject": "sshd PermitRootLogin", "expected": "no", "found": "yes"}}]})
        say("demo-srv reports a critical finding (ssh.permit_root_login)")
        say("syslog line, at once: " + syslog.recv(4096).decode())
        alert = until(lambda: [a for a in it.get(f"{API}/alerts").body["alerts"]
                               if a["webhook"]["attempts"] >= 2])[0]
        say(f"webhook: {alert['webhook']['state']} after {alert['webhook']['attempts']} "
            f"attempts ({alert['webhook']['last_error']}); retried with backoff")
        receiver.up()
        say("the receiver comes up:")
        until(lambda: receiver.bodies)
        until(lambda: all(a["webhook"]["state"] == "delivered"
                          for a in it.get(f"{API}/alerts").body["alerts"]))
        say("silent agent: demo-ws never reported; after 6 s the collector notes it:")
        silent = until(lambda: it.get(f"{API}/findings?check=agent.silent&host=demo-ws"
                                      ).body["findings"], 40)[0]
        say(f"finding {silent['check']} on {silent['host']} ({silent['severity']}, "
            f"{' '.join(silent['clauses'])}): {silent['found']}")
        say("syslog line: " + syslog.recv(4096).decode())
        agents["demo-ws"].post(f"{API}/heartbeat", {"spool": 0})
        until(lambda: it.get(f"{API}/findings?check=agent.silent&host=demo-ws&state=resolved"
                             ).body["findings"])
        say("demo-ws sends a heartbeat: its agent.silent finding is resolved")
        acked = it.post(f"{API}/findings/{alert['finding_id']}/ack",
                        {"comment": "root login closed; ticket INC-1"}).body
        say(f"acknowledged by {acked['ack']['by']}: {acked['ack']['comment']}")
        for item in it.get(f"{API}/alerts").body["alerts"]:
            say(json.dumps({k: item[k] for k in ("id", "kind", "host", "check", "state")})
                + f" webhook {item['webhook']['state']}")
    finally:
        server.terminate()
        server.wait(10)
        receiver.down()
        syslog.close()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _healthy(client: Client) -> bool:
    try:
        return bool(client.get(f"{API}/health").status == 200)
    except OSError:
        client.close()
        return False


if __name__ == "__main__":
    sys.exit(main())
