"""R-OFF, R-RET: `baomi offboard` on real lab hosts (a plain one and a systemd one), real ssh.

A user with an SSH key, a sudo rule, the sudo group, a crontab, an at job, a running process
and an open SSH session on both hosts is frozen everywhere at once; the key is refused by a
real `ssh`, the session is cut, and on the due date (not a day before) the home and the
user's files under the sensitive paths are archived with a verifiable manifest and the account
is deleted with its UID kept retired.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from baomi.offboarding import due_date
from tests.integration.controls import ROOT, check

HOSTS = ["srv1", "srv2"]  # srv1 plain, srv2 systemd


@pytest.fixture(scope="module")
def olab() -> Iterator[LabHandle]:
    with running_lab(f"o{os.getpid() % 10_000_000}", Request(servers=2, systemd_servers=1)) \
            as handle:
        assert handle.flavour("systemd") == ["srv2"], handle.hosts
        yield handle


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


def baomi(state: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """`baomi ARGS` with its own state folder; a run that does not end is a failure (hung)."""
    env = dict(os.environ, BAOMI_STATE_DIR=str(state))
    try:
        result = subprocess.run([sys.executable, "-m", "baomi", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"baomi {' '.join(args)} did not end within {timeout}s (hung)")
    assert "Traceback" not in result.stderr, result.stderr
    return result


def keypair(tmp_path: Path, name: str) -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    key.chmod(0o600)
    return key


def user_ssh(lab: LabHandle, key: Path, user: str, host: str, *command: str,
             ) -> list[str]:
    return ["ssh", "-F", str(lab.ssh_config), "-l", user, "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            host, *command]


def make_user(lab: LabHandle, host: str, user: str, key: Path) -> int:
    """A working account with every door open; returns its UID."""
    pub = key.with_suffix(".pub").read_text(encoding="utf-8").strip()
    setup = (
        f"useradd -m -s /bin/bash {user} && install -d -o {user} -g {user} -m 700 "
        f"/home/{user}/.ssh && printf '%s\\n' '{pub}' > /home/{user}/.ssh/authorized_keys && "
        f"chown {user}: /home/{user}/.ssh/authorized_keys && "
        f"echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-{user} && "
        f"chmod 440 /etc/sudoers.d/90-{user} && usermod -aG sudo {user} && "
        f"echo '17 3 * * * true' | crontab -u {user} - && "
        f"echo true | su -s /bin/sh {user} -c 'at now + 3 hours' 2>/dev/null && "
        f"su -s /bin/sh {user} -c 'setsid sleep 3000 </dev/null >/dev/null 2>&1 &' && "
        f"echo 'notes' > /home/{user}/notes.txt && chown {user}: /home/{user}/notes.txt && "
        f"mkdir -p /srv/customers && echo 'client file' > /srv/customers/{user}-client.txt && "
        f"chown {user} /srv/customers/{user}-client.txt && id -u {user}")
    result = lab.ssh(host, setup)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def wait_for(predicate, seconds: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_freeze_closes_every_door_and_purge_waits_for_the_due_date(
        olab: LabHandle, state: Path, tmp_path: Path) -> None:
    user = "leaver"
    key = keypair(tmp_path, "leaver_key")
    uids = {h: make_user(olab, h, user, key) for h in HOSTS}
    sessions = {}
    try:
        for h in HOSTS:
            login = subprocess.run(user_ssh(olab, key, user, h, "sudo -n true && echo in"),
                                   capture_output=True, text=True, timeout=30)
            assert login.returncode == 0 and login.stdout.strip() == "in", login.stderr
            sessions[h] = subprocess.Popen(user_ssh(olab, key, user, h, "sleep 300"),
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        for h in HOSTS:
            assert wait_for(lambda h=h: olab.ssh(h, f"pgrep -u {user} -f 'sleep 300'")
                            .returncode == 0), f"session on {h} did not start"

        started = time.monotonic()
        result = baomi(state, "offboard", user, "--ticket", "HR-2026-117", "--reason",
                       "resigned", "-i", str(olab.inventory), "--json")
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        today = datetime.now(UTC).date()
        due = due_date(today)
        assert report["due"] == due.isoformat()
        for h in HOSTS:
            assert report["hosts"][h]["state"] == "frozen", report["hosts"][h]
            assert "expire the account (chage -E 0)" in report["hosts"][h]["done"]
        print(f"\nfreeze of one user on {len(HOSTS)} lab hosts: {seconds:.1f}s "
              f"(pyinfra run {report['seconds']}s)")

        for h in HOSTS:
            # The open session is cut...
            assert sessions[h].wait(timeout=20) != 0
            # ...the key is refused by a real ssh...
            login = subprocess.run(user_ssh(olab, key, user, h, "true"), capture_output=True,
                                   text=True, timeout=30)
            assert login.returncode == 255 and "Permission denied" in login.stderr, login
            # ...and nothing of the user runs, sudo is gone, shadow shows lock and expiry.
            assert olab.ssh(h, f"pgrep -u {user}").returncode == 1
            sudo = olab.ssh(h, f"sudo -l -U {user}").stdout
            assert f"User {user} is not allowed to run sudo" in sudo, sudo
            shadow = olab.ssh(h, f"getent shadow {user} | cut -d: -f1,3-8").stdout.strip()
            assert shadow.split(":")[6] == "0", shadow
            assert olab.ssh(h, f"passwd -S {user}").stdout.split()[1] == "L"
            assert olab.ssh(h, f"getent passwd {user} | cut -d: -f7").stdout.strip() == \
                "/usr/sbin/nologin"
            assert olab.ssh(h, f"crontab -l -u {user}; atq").stdout.count(user) == 0
            # The key is quarantined (root-only), not deleted.
            q = olab.ssh(h, f"stat -c '%a %U' /var/lib/baomi/offboarding/quarantine/{user} "
                            f"/var/lib/baomi/offboarding/{user}.json; "
                            f"cat /var/lib/baomi/offboarding/quarantine/{user}/ssh-0-*")
            assert q.stdout.splitlines()[:2] == ["700 root", "600 root"], q.stdout
            assert key.with_suffix(".pub").read_text().split()[1] in q.stdout
            record = json.loads(olab.ssh(h, f"cat /var/lib/baomi/offboarding/{user}.json")
                                .stdout)
            assert (record["ticket"], record["due"], record["state"]) == \
                ("HR-2026-117", due.isoformat(), "frozen")
            assert record["operator"] and record["groups_removed"] == ["sudo"]
            assert record["shell"] == "/bin/bash"
    finally:
        for proc in sessions.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    audit = check(olab, "test_offboarding", HOSTS)
    assert audit.returncode == 0, audit.stdout[-3000:]

    # Freezing a frozen user changes nothing.
    again = baomi(state, "offboard", user, "--ticket", "HR-2026-117", "-i",
                  str(olab.inventory), "--json")
    assert again.returncode == 0, again.stderr
    for h in HOSTS:
        assert json.loads(again.stdout)["hosts"][h]["done"] == []

    # A key put back (an admin's mistake, a restore) is named by the check, removed by a rerun.
    pub = key.with_suffix(".pub").read_text(encoding="utf-8").strip()
    olab.ssh("srv1", f"printf '%s\\n' '{pub}' > /home/{user}/.ssh/authorized_keys")
    audit = check(olab, "test_offboarding", ["srv1"])
    assert audit.returncode != 0
    assert "FAILED checks/test_offboarding.py::test_check[ssh://srv1-offboarding.keys_removed]" \
        in audit.stdout and "1 failed, 9 passed, 2 skipped" in audit.stdout, audit.stdout[-3000:]
    assert f"{user}: SSH keys: expected none (quarantined), found " \
           f"/home/{user}/.ssh/authorized_keys" in audit.stdout, audit.stdout[-3000:]
    fixed = baomi(state, "offboard", user, "--ticket", "HR-2026-117", "-i",
                  str(olab.inventory), "--json")
    assert json.loads(fixed.stdout)["hosts"]["srv1"]["done"] == [
        f"move /home/{user}/.ssh/authorized_keys to the quarantine"]
    assert check(olab, "test_offboarding", HOSTS).returncode == 0

    status = json.loads(baomi(state, "offboard", "--status", user, "--json").stdout)
    assert {h: r["state"] for h, r in status[user].items()} == dict.fromkeys(HOSTS, "frozen")
    assert status[user]["srv1"]["due"] == due.isoformat()

    # One day before the due date: nothing happens, and it says when it will. (The due date
    # is next month: judging by it is a future --now, which takes --force and is recorded.)
    early = baomi(state, "offboard", "--purge-due", "-i", str(olab.inventory), "--force",
                  "--now", (due - timedelta(days=1)).isoformat())
    assert early.returncode == 0, early.stdout + early.stderr
    for h in HOSTS:
        assert f"{user} on {h}: frozen; nothing to do until the deletion date " \
               f"{due.isoformat()}" in early.stdout
        assert olab.ssh(h, f"getent passwd {user}").returncode == 0

    # On the due date: archive with a manifest that verifies, then the account and home go.
    purge = baomi(state, "offboard", "--purge-due", "-i", str(olab.inventory), "--now",
                  due.isoformat(), "--force", "--json")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    events = {e["host"]: e for e in json.loads(purge.stdout)["events"] if e["user"] == user}
    for h in HOSTS:
        assert events[h]["state"] == "deleted", events[h]
        assert events[h]["forced"].startswith(f"--now {due} is in the future"), events[h]
        archive = events[h]["archive"]
        assert archive == f"/var/lib/baomi/custody/{user}-uid{uids[h]}-frozen{today}.tar.gz"
        verify = olab.ssh(h, f"set -e; cd /var/lib/baomi/custody; sha256sum -c {archive}.sha256;"
                             f" d=$(mktemp -d); tar -xzf {archive} -C $d; cd $d; "
                             f"sha256sum -c {archive}.manifest; stat -c '%a %U' {archive}; "
                             "rm -rf $d")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        for member in (f"home/{user}/notes.txt: OK", f"srv/customers/{user}-client.txt: OK",
                       f"var/lib/baomi/offboarding/quarantine/{user}/ssh-0-authorized_keys: "
                       "OK"):
            assert member in verify.stdout, verify.stdout
        assert verify.stdout.strip().endswith("400 root")
        gone = olab.ssh(h, f"getent passwd {user}; ls -d /home/{user}; "
                           f"stat -c %U /srv/customers/{user}-client.txt")
        assert gone.stdout.strip() == "root", gone  # handed to the custodian
        # The UID stays retired: a new account does not get it.
        fresh = olab.ssh(h, f"getent passwd {uids[h]}; useradd newcomer && id -u newcomer; "
                            "userdel newcomer")
        assert fresh.stdout.startswith(f"baomi-retired-{uids[h]}:"), fresh.stdout
        assert int(fresh.stdout.strip().splitlines()[-1]) != uids[h]
    status = json.loads(baomi(state, "offboard", "--status", user, "--json").stdout)
    assert {h: r["state"] for h, r in status[user].items()} == dict.fromkeys(HOSTS, "deleted")
    assert check(olab, "test_offboarding", HOSTS).returncode == 0
    plain = baomi(state, "offboard", "--status")
    assert f"{user}\tsrv1\tdeleted" in plain.stdout, plain.stdout
    ledger = state / "offboarding" / "ledger.jsonl"
    assert oct(ledger.stat().st_mode & 0o777) == "0o600"
    actions = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert {(a["action"], a["state"]) for a in actions if a["user"] == user} >= {
        ("freeze", "frozen"), ("purge", "waiting"), ("purge", "deleted")}
    # The next daily run finds nothing frozen: reached hosts are not "unreachable".
    again = baomi(state, "offboard", "--purge-due", "-i", str(olab.inventory), "--now",
                  due.isoformat(), "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "unreachable" not in again.stdout, again.stdout
    assert "nothing frozen on these hosts" in again.stdout, again.stdout


def test_unreachable_host_is_pending_then_frozen_on_the_next_run(
        olab: LabHandle, state: Path, tmp_path: Path) -> None:
    user = "late"
    key = keypair(tmp_path, "late_key")
    for h in HOSTS:
        make_user(olab, h, user, key)
    inventory = tmp_path / "inventory.py"
    ghost = olab.host("srv2").address.rsplit(".", 1)[0] + ".250"
    text = olab.inventory.read_text(encoding="utf-8").replace(
        f"'ssh_hostname': '{olab.host('srv2').address}'",
        f"'ssh_hostname': '{ghost}', 'ssh_connect_timeout': 3")
    inventory.write_text(text, encoding="utf-8")

    dry = baomi(state, "offboard", user, "--ticket", "HR-9", "-i", str(olab.inventory),
                "--dry")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "srv2: would freeze" in dry.stdout
    assert "would: expire the account (chage -E 0)" in dry.stdout
    assert f"would: move /home/{user}/.ssh/authorized_keys to the quarantine" in dry.stdout
    assert olab.ssh("srv1", f"getent passwd {user} | cut -d: -f7").stdout.strip() == "/bin/bash"
    assert not (state / "offboarding" / "ledger.jsonl").exists()  # a dry run records nothing

    first = baomi(state, "offboard", user, "--ticket", "HR-9", "-i", str(inventory), "--json")
    assert first.returncode == 1, first.stdout + first.stderr
    hosts = json.loads(first.stdout)["hosts"]
    assert hosts["srv1"]["state"] == "frozen"
    assert hosts["srv2"]["state"] == "pending" and hosts["srv2"]["error"]
    status = baomi(state, "offboard", "--status", user)
    assert f"{user}\tsrv2\tpending" in status.stdout and "retried next run" in status.stdout
    login = subprocess.run(user_ssh(olab, key, user, "srv2", "true"), timeout=30)
    assert login.returncode == 0  # not frozen yet: it was unreachable

    # The daily run (with the host back) freezes what was pending, same ticket and due date.
    daily = baomi(state, "offboard", "--purge-due", "-i", str(olab.inventory))
    assert daily.returncode == 0, daily.stdout + daily.stderr
    status = json.loads(baomi(state, "offboard", "--status", user, "--json").stdout)
    assert {h: r["state"] for h, r in status[user].items()} == dict.fromkeys(HOSTS, "frozen")
    assert status[user]["srv2"]["ticket"] == "HR-9"
    login = subprocess.run(user_ssh(olab, key, user, "srv2", "true"), capture_output=True,
                           text=True, timeout=30)
    assert login.returncode == 255 and "Permission denied" in login.stderr
    record = json.loads(olab.ssh("srv2", f"cat /var/lib/baomi/offboarding/{user}.json").stdout)
    assert record["ticket"] == "HR-9"


def _refused(result: subprocess.CompletedProcess[str], message: str, state: Path) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr, result.stdout + result.stderr
    ledger = state / "offboarding" / "ledger.jsonl"
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    assert all(json.loads(x)["state"] == "refused" for x in lines)


def test_refusals(olab: LabHandle, state: Path, tmp_path: Path) -> None:
    inv = str(olab.inventory)
    before = {h: olab.ssh(h, "getent passwd root daemon; md5sum /etc/shadow").stdout
              for h in HOSTS}

    _refused(baomi(state, "offboard", "root", "--ticket", "T", "-i", inv),
             "refused: root is never offboarded; nothing was run", state)
    _refused(baomi(state, "offboard", "bad;name", "--ticket", "T", "-i", inv),
             "'bad;name' is not a valid POSIX user name", state)
    _refused(baomi(state, "offboard", "--ticket", "T", "-i", inv, "--", "-rf"),
             "is not a valid POSIX user name", state)
    # A system account: refused on each host, from its UID, before any step runs.
    system = baomi(state, "offboard", "daemon", "--ticket", "T", "-i", inv, "--json")
    assert system.returncode == 2, system.stdout + system.stderr
    for h in HOSTS:
        row = json.loads(system.stdout)["hosts"][h]
        assert row["state"] == "refused"
        assert "daemon is a system account (UID 1 < policy accounts.min_uid 1000)" \
            in row["error"]
    # The account the deploy connects as.
    connects = tmp_path / "inventory.py"
    connects.write_text(olab.inventory.read_text(encoding="utf-8").replace(
        "'ssh_user': 'root'", "'ssh_user': 'deployer'", 1), encoding="utf-8")
    _refused(baomi(state, "offboard", "deployer", "--ticket", "T", "-i", str(connects)),
             "deployer is the account the deploy connects as on srv1", state)
    # The policy's protected accounts.
    policy = tmp_path / "policy.yaml"
    policy.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "protected_accounts: [root]", "protected_accounts: [root, backupsvc]"),
        encoding="utf-8")
    _refused(baomi(state, "offboard", "backupsvc", "--ticket", "T", "-i", inv, "--policy",
                   str(policy)),
             "backupsvc is a protected account (policy offboarding.protected_accounts)", state)
    # A ticket is required; an effective date in the future is refused.
    missing = baomi(state, "offboard", "someone", "-i", inv)
    assert missing.returncode == 2 and "--ticket is required" in missing.stderr
    future = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    later = baomi(state, "offboard", "someone", "--ticket", "T", "--effective", future,
                  "-i", inv)
    assert later.returncode == 2 and "in the future" in later.stderr

    for h in HOSTS:
        assert olab.ssh(h, "getent passwd root daemon; md5sum /etc/shadow").stdout == before[h]
        assert olab.ssh(h, "ls /var/lib/baomi/offboarding/root.json "
                           "/var/lib/baomi/offboarding/daemon.json").returncode != 0


def test_limit_takes_groups_as_well_as_hosts(olab: LabHandle, state: Path) -> None:
    servers = sorted(olab.group("servers"))
    assert servers, olab.names
    dry = baomi(state, "offboard", "nobody-here", "--ticket", "HR-1", "-i", str(olab.inventory),
                "--limit", "servers", "--dry", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    report = json.loads(dry.stdout)
    assert sorted(report["hosts"]) == servers
    assert {h["state"] for h in report["hosts"].values()} == {"absent"}


def test_policy_explain_shows_offboarding_served() -> None:
    result = subprocess.run([sys.executable, "-m", "baomi", "policy", "explain", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    rows = {r["clause"]: r for r in json.loads(result.stdout)["clauses"]}
    for clause in ("R-OFF", "R-RET"):
        assert rows[clause]["enforced"] and rows[clause]["verified"], rows[clause]


def test_accounts_only_from_approved_requests(olab: LabHandle, state: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """R-PRV: request + approval recorded; the deploy creates only those; the check names
    an account that no record covers."""
    monkeypatch.setenv("BAOMI_STATE_DIR", str(state))  # for the check's subprocess too
    self_approved = baomi(state, "account", "request", "newhire", "--requester", "head.sales",
                          "--approver", "head.sales")
    assert self_approved.returncode == 2
    assert "the requester cannot approve their own request" in self_approved.stderr
    recorded = baomi(state, "account", "request", "newhire", "--requester", "head.sales",
                     "--approver", "vp.ops", "--host", "srv1", "--ticket", "IT-55")
    assert recorded.returncode == 0, recorded.stderr
    requests = state / "accounts" / "requests.jsonl"
    assert oct(requests.stat().st_mode & 0o777) == "0o600"
    assert "newhire\trequested by head.sales\tapproved by vp.ops" in \
        baomi(state, "account", "list").stdout

    first = baomi(state, "account", "apply", "-i", str(olab.inventory), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["hosts"]["srv1"]["controls"]["accounts"] == "changed"
    assert olab.ssh("srv1", "getent passwd newhire").returncode == 0
    assert olab.ssh("srv2", "getent passwd newhire").returncode == 2  # not requested there
    again = json.loads(baomi(state, "account", "apply", "-i", str(olab.inventory),
                             "--json").stdout)
    assert again["hosts"]["srv1"]["controls"]["accounts"] == "unchanged"

    uid = olab.ssh("srv1", "useradd stray && id -u stray").stdout.strip()
    try:
        audit = check(olab, "test_accounts", ["srv1"])
        assert audit.returncode != 0
        assert f"[R-PRV 权限审批] account stray (UID {uid}): expected a recorded request " \
               "(部门主管) and approval (分管副总), found no record" in audit.stdout, audit.stdout
        assert "account newhire" not in audit.stdout
        assert "baomi-retired" not in audit.stdout
    finally:
        olab.ssh("srv1", "userdel stray")


def test_the_ledger_and_requests_at_the_collector(olab: LabHandle, tmp_path: Path) -> None:
    """collector.records: collector: the same freeze and account apply, with the ledger and the
    requests in a real collector (loopback, TLS) instead of the controller's files; a second
    controller (its own state dir and login) sees the freeze; the deploy (a pyinfra child)
    reads the requests from the collector too; the collector's log of it verifies."""
    from tests.collector.conftest import init_folder, serve

    folder = tmp_path / "collector"
    collector = serve(folder, init_folder(folder))
    try:
        url = f"https://127.0.0.1:{collector.port}"
        policy = tmp_path / "policy.yaml"
        text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
        policy.write_text(text.replace("  records: local ", "  records: collector ").replace(
            'url: "https://collector.example.internal:8443"', f'url: "{url}"'),
            encoding="utf-8")
        controllers = [tmp_path / "ctl-a", tmp_path / "ctl-b"]
        envs = [dict(os.environ, BAOMI_STATE_DIR=str(c), BAOMI_POLICY=str(policy))
                for c in controllers]

        def run(env: dict[str, str], *args: str, stdin: str = "",
                ) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([sys.executable, "-m", "baomi", *args], cwd=ROOT, env=env,
                                  input=stdin, capture_output=True, text=True, timeout=300)
            assert "Traceback" not in done.stderr, done.stderr
            return done

        for env in envs:
            login = run(env, "login", "--collector", url, "--ca", collector.ca, "--user",
                        "admin", "--password-stdin", stdin=collector.admin_password + "\n")
            assert login.returncode == 0, login.stderr
        user = "colleaver"
        key = keypair(tmp_path, "colleaver_key")
        make_user(olab, "srv1", user, key)
        frozen = run(envs[0], "offboard", user, "--ticket", "HR-77", "--reason", "resigned",
                     "-i", str(olab.inventory), "--limit", "srv1", "--json")
        assert frozen.returncode == 0, frozen.stdout + frozen.stderr
        assert json.loads(frozen.stdout)["hosts"]["srv1"]["state"] == "frozen"
        login = subprocess.run(user_ssh(olab, key, user, "srv1", "true"), capture_output=True,
                               text=True, timeout=30)
        assert login.returncode == 255 and "Permission denied" in login.stderr
        assert not (controllers[0] / "offboarding").exists()  # nothing in the local files
        status = json.loads(run(envs[1], "offboard", "--status", user, "--json").stdout)
        assert (status[user]["srv1"]["state"], status[user]["srv1"]["ticket"]) == \
            ("frozen", "HR-77")

        recorded = run(envs[1], "account", "request", "colhire", "--requester", "head.sales",
                       "--approver", "vp.ops", "--host", "srv1", "--ticket", "IT-56")
        assert recorded.returncode == 0 and url in recorded.stdout, recorded.stderr
        applied = run(envs[0], "account", "apply", "-i", str(olab.inventory), "--json")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert olab.ssh("srv1", "getent passwd colhire").returncode == 0

        lines = collector.client(collector.it).get("/api/v1/log").body["lines"]
        assert {"offboarding.append", "accounts.append"} <= {line["action"] for line in lines}
        verified = run(envs[1], "collector", "verify-log")
        assert verified.returncode == 0 and "log intact" in verified.stdout, verified.stdout
    finally:
        collector.stop()
        olab.ssh("srv1", "userdel -r colhire 2>/dev/null; true")
