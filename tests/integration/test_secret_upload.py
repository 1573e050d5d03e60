"""Issue 11 item 9: secrets reach a host under sudo without passing through a readable file.

srv1 is deployed by a NON-ROOT SSH user (``deployer``, passwordless sudo, ``_sudo: True`` in
the inventory); a local user ``spy`` on srv1 watches /tmp with inotify during the apply and
reads every file it can as it is written. The backup control uploads the restic password
(the same helper, deploy/common.py ``put_secret``, carries the LUKS recovery passphrase).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controller.escrow import EscrowStore
from baomi.controls import backup as core
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.backup_lab import identity_file, own_escrow
from tests.integration.controls import BAOMI, ROOT, apply_raw, outcomes

SPY = Path(__file__).parent / "data" / "tmp_spy.py"
SPY_LOG = "/root/spy.jsonl"
CANARY = "canary-readable-by-all"


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store of this module's own (env inherited by `baomi apply`); its private key apart."""
    with own_escrow(tmp_path_factory):
        yield identity_file(tmp_path_factory)


@pytest.fixture(scope="module")
def lab(identity: Path) -> Iterator[LabHandle]:
    with running_lab(f"u{os.getpid() % 10_000_000}", Request(servers=1, backup=1)) as h:
        yield h


def sudo_inventory(lab: LabHandle, directory: Path) -> Path:
    """The lab's inventory with srv1 reached as ``deployer`` + sudo (bak1 stays root)."""
    text = lab.inventory.read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith("('srv1'"))
    changed = line.replace("'ssh_user': 'root'", "'ssh_user': 'deployer', '_sudo': True")
    assert changed != line, line
    path = directory / "inventory.py"
    path.write_text(text.replace(line, changed))
    return path


def make_deployer_and_spy(lab: LabHandle) -> None:
    setup = (
        "set -e; useradd -m -s /bin/bash deployer; useradd -M -s /bin/sh spy; "
        "install -d -m 0700 -o deployer -g deployer ~deployer/.ssh; "
        "install -m 0600 -o deployer -g deployer /root/.ssh/authorized_keys "
        "~deployer/.ssh/authorized_keys; "
        "echo 'deployer ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/deployer; "
        "chmod 0440 /etc/sudoers.d/deployer; visudo -cq")
    result = lab.ssh("srv1", setup)
    assert result.returncode == 0, result.stderr
    script = base64.b64encode(SPY.read_bytes()).decode()
    start = (f"echo {script} | base64 -d > /usr/local/lib/tmp_spy.py && "
             f"(setsid runuser -u spy -- python3 -u /usr/local/lib/tmp_spy.py /tmp "
             f"> {SPY_LOG} 2>&1 < /dev/null & echo $! > /root/spy.pid) && "
             f"for i in $(seq 50); do grep -q ready {SPY_LOG} && exit 0; sleep 0.1; done; "
             f"cat {SPY_LOG}; exit 1")
    result = lab.ssh("srv1", start)
    assert result.returncode == 0, result.stdout + result.stderr


def spy_records(lab: LabHandle) -> list[dict[str, str]]:
    result = lab.ssh("srv1", f"cat {SPY_LOG}")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_secret_upload_under_sudo_leaves_nothing_readable_in_tmp(
        lab: LabHandle, tmp_path: Path) -> None:
    make_deployer_and_spy(lab)
    inventory = sudo_inventory(lab, tmp_path)
    whoami = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-l", "deployer", "srv1", "id -un; sudo -n id -un"],
        capture_output=True, text=True, timeout=60)
    assert whoami.stdout.split() == ["deployer", "root"], whoami.stdout + whoami.stderr

    # The spy works: a file a root process leaves readable in /tmp is seen and read.
    lab.ssh("srv1", f"echo {CANARY} > /tmp/canary && sleep 0.3")

    result = subprocess.run([*BAOMI, "apply", "-i", str(inventory), "--json", "--only",
                             "backup"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert outcomes(json.loads(result.stdout), "backup")["srv1"] == "changed", result.stdout

    password = lab.ssh("srv1", f"cat {core.PASSWORD_FILE}").stdout.strip()
    assert len(password) >= 32, password
    mode = lab.ssh("srv1", f"stat -c '%a %U:%G' {core.PASSWORD_FILE}").stdout.strip()
    assert mode == "600 root:root", mode

    records = spy_records(lab)
    read = {r["file"]: base64.b64decode(r["data"]).decode(errors="replace")
            for r in records if "data" in r}
    assert CANARY in read.get("/tmp/canary", ""), records  # the spy could read what it may
    leaked = {path: text for path, text in read.items() if password in text}
    assert not leaked, f"the restic password was readable by a local user at {sorted(leaked)}"
    staging = [r for r in records if re.fullmatch(r"/tmp/baomi-secret-[0-9a-f]{32}",
                                                  r.get("dir", ""))]
    assert staging and all(r["error"] == "Permission denied" for r in staging), records
    left = lab.ssh("srv1", "ls -A /tmp").stdout.split()
    assert not [name for name in left if name.startswith(("baomi-secret-", "pyinfra-"))], left


def test_escrow_holds_no_readable_password_and_a_rebuilt_host_needs_the_offline_key(
        lab: LabHandle, identity: Path) -> None:
    """Item 10: the controller escrowed srv1's password but cannot read it back: a host that
    lost it gets it again only with the offline identity, and that retrieval is recorded."""
    store = EscrowStore.default()
    password = lab.ssh("srv1", f"cat {core.PASSWORD_FILE}").stdout.strip()
    held = b"".join(p.read_bytes() for p in store.dir.iterdir())
    assert password.encode() not in held and b"IDENTITY" not in held
    assert sorted(p.name for p in store.dir.iterdir()) == ["entries.jsonl", "escrow.pub"]

    lab.ssh("srv1", f"rm -f {core.PASSWORD_FILE}")
    refused = apply_raw(lab, "backup", limit=["srv1"])
    assert refused.returncode != 0
    report = json.loads(refused.stdout)["hosts"]["srv1"]
    assert "sealed to the escrow's offline key" in json.dumps(report), report
    assert "BAOMI_ESCROW_IDENTITY" in json.dumps(report), report
    assert store.retrievals() == []

    env = {**os.environ, "BAOMI_ESCROW_IDENTITY": str(identity), "SUDO_USER": "alice"}
    restored = subprocess.run([*BAOMI, "apply", "-i", str(lab.inventory), "--json", "--only",
                               "backup", "--limit", "srv1"], cwd=ROOT, capture_output=True,
                              text=True, timeout=600, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr[-3000:]
    assert lab.ssh("srv1", f"cat {core.PASSWORD_FILE}").stdout.strip() == password
    (record,) = store.retrievals()
    assert (record["host"], record["operator"], record["operator_from"]) == \
        ("srv1", "alice", "SUDO_USER")
    assert "rebuilt" in record["reason"]
