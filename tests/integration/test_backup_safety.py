"""R-BAK's destructive paths against a hostile client and a bad day (issue 11, items 5-7).

Its own lab: srv1 (plain, cron), srv2 (systemd, timer), bak1 (the repositories).  Every hostile
state is real (accounts, shells, homes, an unmounted volume, corrupt packs, a compromised
client's root shell) and made over ssh; nothing is mocked.  Tests run in file order.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controls import backup as core
from baomi.lab.testing import LabHandle
from tests.integration.backup_lab import backup_lab, identity_file
from tests.integration.controls import BAOMI, ROOT, apply, apply_raw, check

POLICY = (ROOT / "policy.yaml").read_text(encoding="utf-8")
REPOSITORY_LINE = next(line for line in POLICY.splitlines()
                       if line.startswith("  repository: "))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    with backup_lab(tmp_path_factory, "bs") as handle:
        yield handle


def policy_file(tmp_path: Path, old: str, new: str) -> Path:
    assert old in POLICY, old
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace(old, new, 1), encoding="utf-8")
    return path


def client_restic(lab: LabHandle, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """restic exactly as the installed job runs it (its configuration, key and options): what
    root on a compromised client can do with the repository."""
    program = ("import json, sys\nns = {'__name__': 'baomi'}\n"
               f"exec(open({core.HELPER_PATH!r}).read(), ns)\n"
               f"cfg = json.load(open({core.CONFIG_FILE!r}))\n"
               "proc = ns['restic'](cfg, *sys.argv[1:])\n"
               "sys.stdout.write(proc.stdout); sys.stderr.write(proc.stderr)\n"
               "sys.exit(proc.returncode)\n")
    return lab.ssh(host, f"python3 -c {shlex.quote(program)} "
                         + " ".join(shlex.quote(a) for a in args))


def snapshot_ids(lab: LabHandle, host: str) -> list[str]:
    proc = client_restic(lab, host, "snapshots", "--json")
    assert proc.returncode == 0, proc.stderr
    return sorted(s["short_id"] for s in json.loads(proc.stdout or "[]"))


def run_job(lab: LabHandle, host: str) -> tuple[int, dict]:
    proc = lab.ssh(host, f"{core.HELPER_PATH} run")
    status = json.loads(lab.ssh(host, f"cat {core.STATUS_FILE}").stdout or "{}")
    return proc.returncode, status


def repository_listing(lab: LabHandle, host: str) -> str:
    """Every file of a client's repository on the backup host with its hash."""
    out = lab.ssh("bak1", f"cd /srv/restic/{host} && find . -type f -print0 | sort -z | "
                          "xargs -0 sha256sum").stdout
    assert out.count("\n") > 5, out
    return out


def authorized(lab: LabHandle) -> str:
    return lab.ssh("bak1", "cat /var/backups/.ssh/authorized_keys 2>/dev/null").stdout


def test_repository_without_a_user_stops_before_any_host_is_touched(
        lab: LabHandle, tmp_path: Path) -> None:
    policy = policy_file(tmp_path, REPOSITORY_LINE,
                         '  repository: "sftp:bak1:/srv/restic/{host}"')
    result = apply_raw(lab, "backup", policy=policy)
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    problem = json.loads(result.stdout)["problems"][0]
    line = POLICY.splitlines().index(REPOSITORY_LINE) + 1
    assert (problem["file"], problem["line"]) == (str(policy), line), problem
    assert "names no account" in problem["message"], problem
    assert "baomi-backup@" not in lab.ssh("bak1", "cat /root/.ssh/authorized_keys").stdout


def test_unfit_repository_accounts_are_refused_on_the_backup_host(
        lab: LabHandle, tmp_path: Path) -> None:
    """UID 0, a login shell, a home the account can write: each is refused by the deploy on
    the backup host, naming the account and what is wrong, and no key is written."""
    lab.ssh("bak1", "useradd -o -u 0 -M -d /var/lib/toor -s /usr/sbin/nologin toor && "
                    "useradd -m -d /home/bkw -s /usr/sbin/nologin bkw && "
                    "useradd -M -d /var/lib/bksh -s /bin/bash bksh && "
                    "mkdir -p /var/lib/toor /var/lib/bksh")
    cases = {"toor": "UID 0", "bkw": "home /home/bkw is writable by bkw",
             "bksh": "login shell /bin/bash"}
    before = lab.ssh("bak1", "cat /root/.ssh/authorized_keys").stdout
    for user, why in cases.items():
        policy = policy_file(tmp_path, REPOSITORY_LINE, REPOSITORY_LINE.replace(
            "backup@bak1", f"{user}@bak1"))
        result = apply_raw(lab, "backup", policy=policy, limit=["bak1"])
        assert result.returncode == 1, (user, result.stdout, result.stderr[-2000:])
        report = json.loads(result.stdout)
        assert report["failed_hosts"] == ["bak1"], report
        error = report["hosts"]["bak1"]["error"]
        assert f"account {user}" in error and why in error, (user, error)
        home = {"toor": "/var/lib/toor", "bkw": "/home/bkw", "bksh": "/var/lib/bksh"}[user]
        assert lab.ssh("bak1", f"test -e {home}/.ssh").returncode == 1, user
    assert lab.ssh("bak1", "cat /root/.ssh/authorized_keys").stdout == before


def test_first_apply_and_job_runs_with_restore_tests_in_a_private_place(lab: LabHandle) -> None:
    report = apply(lab, "backup")
    assert report["failed_hosts"] == [], report
    code, status = run_job(lab, "srv2")
    assert code == 0, status
    # A restore test must not write samples to /var/tmp: with /var/tmp unusable the run still
    # restores and compares its sample, and leaves nothing behind.
    lab.ssh("srv1", "mv /var/tmp /var/tmp.keep && : > /var/tmp")
    try:
        code, status = run_job(lab, "srv1")
    finally:
        lab.ssh("srv1", "rm -f /var/tmp && mv /var/tmp.keep /var/tmp")
    assert code == 0, status
    assert status["restore_test"]["matched"] == 5, status
    assert lab.ssh("srv1", "ls -A /var/lib/baomi/backup 2>/dev/null").stdout.strip() == ""


def test_a_client_cannot_delete_its_own_snapshots(lab: LabHandle) -> None:
    ids = snapshot_ids(lab, "srv1")
    assert ids
    forget = client_restic(lab, "srv1", "forget", "--prune", ids[0])
    assert forget.returncode != 0, forget.stdout + forget.stderr
    assert snapshot_ids(lab, "srv1") == ids


def test_a_client_cannot_delete_another_clients_repository(lab: LabHandle) -> None:
    before = repository_listing(lab, "srv2")
    key = f"-i {core.KEY_FILE} -o UserKnownHostsFile={core.KNOWN_HOSTS} -o BatchMode=yes"
    attacks = [
        f"printf 'rm /srv/restic/srv2/config\\nrm /srv/restic/srv2/keys/*\\n' | "
        f"sftp {key} -b - backup@bak1",
        f"ssh {key} backup@bak1 rm -rf /srv/restic/srv2 </dev/null",
        f"ssh {key} backup@bak1 'DELETE /srv/restic/srv2/config' </dev/null",
    ]
    for attack in attacks:
        # Only the effect counts; the forced command answers in restic's binary protocol,
        # which is not text.
        lab.ssh("srv1", f"timeout 60 sh -c {shlex.quote(attack)} >/dev/null 2>&1")
    assert repository_listing(lab, "srv2") == before
    assert snapshot_ids(lab, "srv2")


def test_keys_of_hosts_gone_from_the_inventory_are_revoked(lab: LabHandle,
                                                          tmp_path: Path) -> None:
    assert "baomi-backup@srv2" in authorized(lab)
    inventory = tmp_path / "inventory.py"
    inventory.write_text(lab.inventory.read_text(encoding="utf-8")
                         + "all = [h for h in all if h[0] != 'srv2']\n"
                           "servers = [h for h in servers if h != 'srv2']\n", encoding="utf-8")
    result = subprocess.run([*BAOMI, "apply", "-i", str(inventory), "--only", "backup",
                             "--limit", "bak1", "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    keys = authorized(lab)
    assert "baomi-backup@srv2" not in keys and "baomi-backup@srv1" in keys, keys
    assert client_restic(lab, "srv2", "snapshots").returncode != 0
    assert snapshot_ids(lab, "srv1")
    apply(lab, "backup")  # srv2 is back in the inventory and publishes its key again
    assert "baomi-backup@srv2" in authorized(lab)
    assert snapshot_ids(lab, "srv2")


def test_a_volume_that_failed_to_mount_is_not_backed_up(lab: LabHandle, tmp_path: Path) -> None:
    """/srv/customers is the mount point of an encrypted volume that did not come up (nofail):
    the job refuses instead of saving an empty directory under the same snapshot group."""
    policy = policy_file(tmp_path, "  volumes: []", "  volumes: [{device: /dev/baomi-missing, "
                                                    "mount: /srv/customers, groups: [servers]}]")
    apply(lab, "backup", policy=policy, limit=["srv1"])
    ids = snapshot_ids(lab, "srv1")
    code, status = run_job(lab, "srv1")
    assert code != 0, status
    assert "/srv/customers is not a mount point" in status["error"], status
    assert snapshot_ids(lab, "srv1") == ids
    apply(lab, "backup", limit=["srv1"])


def snapshot_at(lab: LabHandle, host: str, when: dt.datetime | None = None) -> str:
    """A snapshot of the job's paths dated ``when`` (default: now), taken with the client's
    own access."""
    stamp = ["--time", when.strftime("%Y-%m-%d %H:%M:%S")] if when else []
    proc = client_restic(lab, host, "backup", "--json", "--host", host, *stamp,
                         "/srv/customers", "/srv/contracts")
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout.splitlines()[-1])["snapshot_id"])[:8]


def monthly(lab: LabHandle, host: str, months: int) -> list[str]:
    """One snapshot on the 15th of each of the ``months`` months before this one."""
    today = dt.datetime.now(dt.UTC)
    out = []
    for back in range(1, months + 1):
        year, month0 = divmod(today.year * 12 + today.month - 1 - back, 12)
        out.append(snapshot_at(lab, host, dt.datetime(year, month0 + 1, 15, 12)))
    return out


def prune(lab: LabHandle, identity: Path, *hosts: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAOMI, "backup", "prune", *hosts, "-i", str(lab.inventory),
                           "--reason", "integration test", "--identity", str(identity),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_collapsed_run_does_not_prune_the_good_snapshots(
        lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    identity = identity_file(tmp_path_factory)
    months = monthly(lab, "srv1", 10)
    lab.ssh("srv1", "mkdir -p /root/keep && mv /srv/customers/* /root/keep/")
    try:
        code, status = run_job(lab, "srv1")  # the job itself never forgets
        assert code == 0, status
        kept = snapshot_ids(lab, "srv1")
        refused = prune(lab, identity, "srv1")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        error = json.loads(refused.stdout)["holders"]["bak1"]["error"]
        assert re.search(r"srv1: snapshot \w{8} holds \d+ of the \d+ files and folders "
                         r"\(\d+ of \d+ bytes\) of snapshot \w{8}, below 50%", error), error
        assert error.endswith("not forgetting"), error
        assert snapshot_ids(lab, "srv1") == kept
    finally:
        lab.ssh("srv1", "mv /root/keep/* /srv/customers/")
    code, status = run_job(lab, "srv1")
    assert code == 0, status
    recent = [snapshot_at(lab, "srv1") for _ in range(8)]
    done = prune(lab, identity, "srv1")
    assert done.returncode == 0, done.stdout + done.stderr
    # keep_last 8 (the recent ones) and keep_monthly 12 (the newest of each month: the 10
    # earlier months, and this month's is a recent one); this month's older runs are gone.
    assert snapshot_ids(lab, "srv1") == sorted(months + recent)
    assert check(lab, "test_backup", ["srv1"]).returncode == 0


def test_a_failed_restore_test_fails_the_job(lab: LabHandle) -> None:
    # Damage every data pack of srv2's repository throughout (every sampled file is hit).
    lab.ssh("bak1", "for f in $(find /srv/restic/srv2/data -type f); do s=$(stat -c %s $f); "
                    "o=64; while [ $o -lt $s ]; do printf '\\377' | dd of=$f bs=1 seek=$o "
                    "conv=notrunc 2>/dev/null; o=$((o+512)); done; done")
    code, status = run_job(lab, "srv2")
    assert code != 0, status
    assert status["exit"] != 0 and status["error"].startswith("restore test:"), status
    out = check(lab, "test_backup", ["srv2"]).stdout
    assert "FAILED checks/test_backup.py::test_check[ssh://srv2-backup.restore]" in out, out
