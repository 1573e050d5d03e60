"""R-SEC (firewall) on real lab hosts: a real connection from another host is dropped after apply,
SSH keeps working, tampering is named, apply repairs, policy changes apply."""

from __future__ import annotations

import time
from pathlib import Path

from baomi.lab.testing import LabHandle
from tests.integration.controls import ROOT, apply, check, outcomes

C = "firewall"
HOSTS = ["srv1", "srv2"]  # plain hosts: each has its own network namespace
PORT = 8080  # a service the policy does not allow


def connect(lab: LabHandle, src: str, dst: str, port: int) -> str:
    """'open' when a TCP connection from SRC to DST:PORT succeeds within 2 s, else the error."""
    probe = ("import socket,sys\n"
             "try:\n"
             f"    socket.create_connection(({lab.host(dst).address!r}, {port}), timeout=2)\n"
             "    print('open')\n"
             "except OSError as e:\n"
             "    print(type(e).__name__)\n")
    return lab.ssh(src, f"python3 -c \"{probe}\"").stdout.strip()


def serve(lab: LabHandle, host: str) -> None:
    lab.ssh(host, f"cd /tmp && (setsid python3 -m http.server {PORT} >/dev/null 2>&1 &)")
    for _ in range(50):
        if lab.ssh(host, f"ss -Htln 'sport = :{PORT}' | grep -q LISTEN").returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"http.server did not start on {host}")


def test_firewall_cycle(lab: LabHandle, tmp_path: Path) -> None:
    for host in HOSTS:
        serve(lab, host)
    try:
        run_cycle(lab, tmp_path)
    finally:
        for host in HOSTS:
            lab.ssh(host, f"pkill -f 'http.server {PORT}'")
            # Leave the default policy loaded: SSH allowed, as every other test needs.
        apply(lab, C, limit=HOSTS)


def run_cycle(lab: LabHandle, tmp_path: Path) -> None:
    fresh = check(lab, "test_firewall", HOSTS)
    assert fresh.returncode == 1, fresh.stdout
    assert "table inet baomi_filter: expected loaded, default-deny inbound, found not loaded" \
        in fresh.stdout
    assert connect(lab, "ws1", "srv1", PORT) == "open"

    started = time.monotonic()
    first = apply(lab, C, limit=HOSTS)
    seconds = time.monotonic() - started
    assert set(outcomes(first, C).values()) == {"changed"}
    assert check(lab, "test_firewall", HOSTS).returncode == 0
    for host in HOSTS:
        assert connect(lab, "ws1", host, PORT) == "TimeoutError"  # dropped, not refused
        assert connect(lab, "ws1", host, 22) == "open"
        assert lab.ssh(host, "true").returncode == 0
    second = apply(lab, C, limit=HOSTS)
    assert outcomes(second, C) == {"srv1": "unchanged", "srv2": "unchanged"}
    print(f"first apply {seconds:.1f}s, idempotent re-run {second['seconds']}s")

    # Tamper as an administrator opening a port by hand, and one who flushes everything.
    lab.ssh("srv1", f"nft add rule inet baomi_filter input tcp dport {PORT} accept")
    lab.ssh("srv2", "nft flush ruleset")
    assert connect(lab, "ws1", "srv1", PORT) == "open"
    drifted = check(lab, "test_firewall", HOSTS)
    assert drifted.returncode == 1
    assert f"inbound tcp/{PORT}: expected dropped (the policy allows no such port), found " \
           f"accepted from anywhere by rule 'tcp dport {PORT} accept'" in drifted.stdout
    assert "table inet baomi_filter: expected loaded, default-deny inbound, found not loaded: " \
           "nothing filters inbound connections" in drifted.stdout
    repaired = apply(lab, C, limit=HOSTS)
    assert outcomes(repaired, C) == {"srv1": "changed", "srv2": "changed"}
    assert check(lab, "test_firewall", HOSTS).returncode == 0
    assert connect(lab, "ws1", "srv1", PORT) == "TimeoutError"

    # The policy allows the port from the lab's network: a change, and the port opens.
    subnet = lab.host("ws1").address.rsplit(".", 1)[0] + ".0/24"
    opened = tmp_path / "policy.yaml"
    opened.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "  allow: []", f"  allow: [{{port: {PORT}, proto: tcp, from: [{subnet}], "
                       "comment: test web}]").replace(
        "  default_inbound: drop ", "  default_inbound: reject"), encoding="utf-8")
    before = check(lab, "test_firewall", ["srv1"], policy=opened)
    assert f"inbound tcp/{PORT}: expected 'ip saddr {subnet} tcp dport {PORT} accept', " \
           "found missing" in before.stdout
    assert outcomes(apply(lab, C, limit=["srv1"], policy=opened), C) == {"srv1": "changed"}
    assert check(lab, "test_firewall", ["srv1"], policy=opened).returncode == 0
    assert connect(lab, "ws1", "srv1", PORT) == "open"
    # default_inbound: reject answers at once (ICMP admin-prohibited) instead of a timeout.
    assert connect(lab, "ws1", "srv1", 9) == "OSError"
    assert lab.ssh("srv1", "true").returncode == 0

    # R-LOG: srv2 becomes the log host (its port here is the test web's): its firewall lets
    # the forwarded logs in with no allow entry; srv1, not the log host, still drops the port.
    logs = tmp_path / "logs.yaml"
    logs.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        '  host: ""   ', "  host: srv2   ", 1).replace(
        "  port: 6514 ", f"  port: {PORT} ", 1), encoding="utf-8")
    assert outcomes(apply(lab, C, limit=HOSTS, policy=logs), C) == {
        "srv1": "changed", "srv2": "changed"}  # srv1 loses the test web's allow
    assert check(lab, "test_firewall", HOSTS, policy=logs).returncode == 0
    assert connect(lab, "ws1", "srv2", PORT) == "open"
    assert connect(lab, "ws1", "srv1", PORT) == "TimeoutError"
