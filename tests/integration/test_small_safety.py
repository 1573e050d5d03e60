"""Issue 11 item 13 on a real lab host (srv1, plain): revoked accounts stay gone, unknown host
keys are refused, a Match block cannot loosen sshd unseen, the firewall's boot step is named.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controls import firewall
from baomi.controls.contract import HostContext, evaluate
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from baomi.policy import load
from tests.integration.controls import BAOMI, ROOT, apply, check

MATCH = "Match Address 10.0.0.0/8\n    PasswordAuthentication yes\n"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHandle]:
    with running_lab(f"m{os.getpid() % 10_000_000}", Request(servers=1)) as handle:
        yield handle


def baomi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAOMI, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


def test_runner_refuses_an_unknown_host_key(lab: LabHandle, tmp_path: Path) -> None:
    """An inventory that pins no host key (no strict checking, an empty known_hosts): pyinfra
    alone would accept srv1's key on first use; `baomi apply` refuses to connect."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    text = lab.inventory.read_text()
    text = re.sub(r"'ssh_strict_host_key_checking': 'yes', ", "", text)
    text = text.replace(str(lab.known_hosts), str(known))
    assert "ssh_strict_host_key_checking" not in text
    inventory = tmp_path / "inventory.py"
    inventory.write_text(text)
    result = baomi("apply", "-i", str(inventory), "--only", "ssh", "--dry", "--json")
    assert result.returncode != 0, result.stdout
    report = json.loads(result.stdout)
    assert report["failed_hosts"] == ["srv1"], report
    assert known.read_text() == "", "srv1's key was accepted on first use"


def test_sshd_match_address_block_allowing_passwords_fails_the_check(lab: LabHandle) -> None:
    apply(lab, "ssh", limit=["srv1"])
    assert check(lab, "test_ssh", ["srv1"]).returncode == 0
    lab.ssh("srv1", f"printf '\\n{MATCH}' >> /etc/ssh/sshd_config && sshd -t")
    try:
        drifted = check(lab, "test_ssh", ["srv1"])
        line = next(n for n, t in enumerate(lab.ssh(
            "srv1", "cat /etc/ssh/sshd_config").stdout.splitlines(), 1) if t.startswith("Match"))
        assert drifted.returncode == 1, drifted.stdout
        assert ("FAILED checks/test_ssh.py::test_check[ssh://srv1-ssh.password_authentication]"
                in drifted.stdout), drifted.stdout[-3000:]
        assert (f"sshd PasswordAuthentication in the Match block at /etc/ssh/sshd_config:{line}:"
                " expected no, found yes for user=root,host=client.invalid,addr=10.0.0.0"
                in drifted.stdout), drifted.stdout[-3000:]
    finally:
        lab.ssh("srv1", "sed -i '/^Match Address 10.0.0.0\\/8$/,$d' /etc/ssh/sshd_config")
    assert check(lab, "test_ssh", ["srv1"]).returncode == 0


def test_plain_host_without_init_names_why_nothing_loads_the_ruleset_at_boot(
        lab: LabHandle) -> None:
    apply(lab, "firewall", limit=["srv1"])
    ctx = HostContext.of(load(ROOT / "policy.yaml"), {"servers"}, "srv1")
    want = firewall.desired(ctx)
    out = lab.ssh("srv1", firewall.observe_script(want))
    seen = firewall.parse(out.stdout, want)
    assert (seen.service, seen.init) == ("no-systemd", "sshd")
    result = evaluate(firewall.CONTROL, "srv1", want, seen)
    assert result.statuses()["firewall.loaded"] == "pass"
    assert result.not_applicable["firewall.boot_service"].startswith(
        "no init system on this host (PID 1 is sshd): nothing on it runs at boot")


def test_account_apply_does_not_recreate_a_revoked_user(lab: LabHandle, tmp_path: Path) -> None:
    env = {**os.environ, "BAOMI_STATE_DIR": str(tmp_path / "state")}
    made = baomi("account", "request", "alice", "--requester", "head.sales", "--approver",
                 "vp.ops", "--host", "srv1", env=env)
    assert made.returncode == 0, made.stderr

    def apply_accounts() -> None:
        result = baomi("account", "apply", "-i", str(lab.inventory), "--json", env=env)
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]

    def exists() -> bool:
        return lab.ssh("srv1", "getent passwd alice").returncode == 0

    apply_accounts()
    assert exists()
    lab.ssh("srv1", "userdel -r alice")  # purged (as offboarding's purge does)
    apply_accounts()
    assert exists(), "without a revocation the request still covers alice"  # the hazard
    lab.ssh("srv1", "userdel -r alice")
    revoked = baomi("account", "revoke", "alice", "--ticket", "OFF-11", "--by", "hr.li", env=env)
    assert revoked.returncode == 0, revoked.stderr
    apply_accounts()
    assert not exists(), "account apply recreated a revoked user"
    records = (tmp_path / "state" / "accounts" / "requests.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["action"] == "revoke"
    assert (json.loads(records[-1])["by"], json.loads(records[-1])["ticket"]) == \
        ("hr.li", "OFF-11")
