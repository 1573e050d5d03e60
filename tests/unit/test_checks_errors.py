"""The checks stop with a clear line (exit 2) on a bad inventory, before any host is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_inventory_is_a_clear_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
         "checks/test_ssh.py", "--hosts=ssh://unused-host", f"--inventory={missing}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{missing}: no such inventory file" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_readings_connect_each_host_once_first_and_share_the_unreachable_reason() -> None:
    """The checks' concurrent readings: a host's controls start only after its first ssh
    (its master) answered; a host ssh cannot reach runs none, each reading says ssh's reason."""
    import threading
    import time

    import pytest

    from baomi.checks.conftest import PER_HOST, Contexts, Readings, Unreachable, _read_once
    from baomi.policy import default_policy_path, load

    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Backend:
        def __init__(self, name: str) -> None:
            self.hostname = name

    class Host:
        def __init__(self, name: str, up: bool) -> None:
            self.backend, self.up = Backend(name), up

        def run(self, command: str) -> None:
            time.sleep(0.05)  # the master's set-up: readings must wait for it
            with lock:
                calls.append((self.backend.hostname, command))
            if not self.up:
                raise RuntimeError(type("Out", (), {"stderr": "ssh: connect to host x port 22: "
                                                              "Connection refused\n"})())

    running = {"now": 0, "most": 0}

    def read(host: Host, ctx: object) -> str:
        with lock:
            calls.append((host.backend.hostname, "read"))
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.02)
        with lock:
            running["now"] -= 1
        return f"result of {host.backend.hostname}"

    policy = load(default_policy_path())
    hosts = {"up1": Host("up1", True), "down": Host("down", False)}
    contexts = Contexts(policy, {"up1": {"servers"}, "down": {"servers"}})
    readings = Readings(8, contexts)
    readings.start({n: (h, contexts.of(h)) for n, h in hosts.items()},
                   {f"c{i}": read for i in range(1, 9)})  # type: ignore[misc]
    try:
        assert _read_once(("up1", "c1"), readings, lambda: "unused") == "result of up1"  # type: ignore[arg-type,return-value,comparison-overlap]
        assert readings.futures[("up1", "c2")].result() == "result of up1"  # type: ignore[comparison-overlap]
        with pytest.raises(Unreachable, match="Connection refused"):
            readings.futures[("down", "c1")].result()
        with pytest.raises(pytest.fail.Exception, match="down could not be reached: ssh: "
                                                        "connect to host x port 22"):
            _read_once(("down", "c2"), readings, lambda: "unused")  # type: ignore[arg-type,return-value]
    finally:
        readings.close()
    up1 = [c for h, c in calls if h == "up1"]
    assert up1 == ["true"] + ["read"] * 8  # connected once, first
    assert running["most"] == PER_HOST  # sshd's MaxSessions: a few sessions at once per host
    assert [c for h, c in calls if h == "down"] == ["true"]  # nothing run on it
