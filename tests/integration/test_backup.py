"""R-BAK on its own lab: srv1 (plain, cron), srv2 (systemd, timer), bak1 (the repositories,
served append-only by rclone over SSH).

One module-scoped lab because the tests create repositories and break them; they run in file
order: fresh → apply → run → all checks pass → gap → stopped timer → wrong password → corrupt.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from baomi.controller.escrow import EscrowStore
from baomi.controls import backup as core
from baomi.controls.contract import HostContext
from baomi.lab.testing import LabHandle
from baomi.policy import load
from tests.integration.backup_lab import CLIENTS, backup_lab
from tests.integration.controls import BAOMI, ROOT, apply, check, outcomes


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    with backup_lab(tmp_path_factory, "b") as handle:
        yield handle


def run_check(lab: LabHandle, hosts: list[str] = CLIENTS) -> str:
    result = check(lab, "test_backup", hosts)
    return result.stdout + result.stderr


def failed(host: str, check_id: str) -> str:
    """pytest's line for a failed check (one test per host x check ID)."""
    return f"FAILED checks/test_backup.py::test_check[ssh://{host}-{check_id}]"


def restic(lab: LabHandle, host: str, args: str) -> str:
    """restic on a client with the deployed password file, key and pinned host key."""
    want = core.desired(HostContext.of(load(ROOT / "policy.yaml"), {"servers"}, host))
    assert want.remote is not None
    program = "rclone.program=" + core.ssh_command(want.remote)
    command = (f"restic --repo {shlex.quote(want.repository)} --password-file "
               f"{core.PASSWORD_FILE} --no-cache -o {shlex.quote(program)} "
               f"-o {shlex.quote('rclone.args=' + core.RCLONE_ARGS)} {args}")
    result = lab.ssh(host, command)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fresh_host_fails(lab: LabHandle) -> None:
    out = run_check(lab, ["srv2"])
    assert failed("srv2", "backup.setup") in out and f"{core.CONFIG_FILE}: expected" in out, \
        out[-3000:]


def test_apply_then_reapply_unchanged(lab: LabHandle) -> None:
    first = apply(lab, "backup")
    assert outcomes(first, "backup") == {"srv1": "changed", "srv2": "changed",
                                         "bak1": "changed"}, first
    second = apply(lab, "backup")
    assert set(outcomes(second, "backup").values()) == {"unchanged"}, second
    store = EscrowStore.default()
    for host in CLIENTS:
        entry = store.latest(core.ESCROW_KIND, host, f"rclone:backup@bak1:/srv/restic/{host}")
        password = lab.ssh(host, f"cat {core.PASSWORD_FILE}").stdout
        assert entry is not None and entry["secret_sha256"] == \
            hashlib.sha256(password.encode()).hexdigest()
        assert password not in json.dumps(first)  # never in the apply output
        assert lab.ssh(host, f"stat -c '%a %U' {core.PASSWORD_FILE}").stdout.strip() == \
            "600 root"
    keys = lab.ssh("bak1", "cat /var/backups/.ssh/authorized_keys").stdout
    for host in CLIENTS:
        assert f'restrict,command="serve-restic /srv/restic/{host}" ssh-ed25519 ' in keys, keys
    # The account serves repositories only: no shell for a client's key.
    # The key runs its forced command (rclone speaking HTTP/2, binary) whatever is asked.
    shell = lab.ssh("srv2", f"ssh -i {core.KEY_FILE} -o UserKnownHostsFile={core.KNOWN_HOSTS} "
                            "-o BatchMode=yes backup@bak1 id </dev/null | tr -c '[:print:]' .")
    assert "uid=" not in shell.stdout, shell.stdout


def test_triggered_run_makes_every_check_pass(lab: LabHandle) -> None:
    started = time.monotonic()
    systemd = lab.ssh("srv2", f"systemctl start {core.SERVICE}")
    srv2_seconds = time.monotonic() - started
    assert systemd.returncode == 0, systemd.stderr
    started = time.monotonic()
    plain = lab.ssh("srv1", f"{core.HELPER_PATH} run")
    srv1_seconds = time.monotonic() - started
    assert plain.returncode == 0, plain.stdout + plain.stderr
    status = json.loads(lab.ssh("srv2", f"cat {core.STATUS_FILE}").stdout)
    assert status["exit"] == 0 and status["snapshot"] and status["restore_test"]["matched"] == 5
    started = time.monotonic()
    out = run_check(lab)
    check_seconds = time.monotonic() - started
    assert "12 passed" in out, out[-3000:]
    print(f"\nbackup run (service, srv2): {srv2_seconds:.1f}s; (cron job, srv1): "
          f"{srv1_seconds:.1f}s; job's restore test {status['restore_test']['seconds']}s; "
          f"checks on 2 hosts incl. restic check + restore tests: {check_seconds:.1f}s")


def test_gap_in_the_chain_is_named(lab: LabHandle) -> None:
    ids = []
    for days in (24, 13):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - days * 86400))
        out = restic(lab, "srv2", f"backup --json --host srv2 --time '{stamp}' /srv/customers")
        ids.append(json.loads(out.splitlines()[-1])["snapshot_id"])
    try:
        out = run_check(lab, ["srv2"])
    finally:  # the client cannot forget (append-only): removed on bak1 as the operator would
        lab.ssh("bak1", " && ".join(f"rm /srv/restic/srv2/snapshots/{i[:8]}*" for i in ids))
    assert failed("srv2", "backup.continuity") in out, out[-3000:]
    assert "1 failed, 5 passed" in out, out[-3000:]
    assert f"snapshots {ids[0][:8]} → {ids[1][:8]}: expected at most 7 days + 24 h apart, " \
        "found gap of 11.0 days from" in out, out[-3000:]
    assert "found gap of 13.0 days from" in out, out[-3000:]
    assert "6 passed" in run_check(lab, ["srv2"])


def test_stopped_timer_fails_schedule_and_apply_repairs(lab: LabHandle) -> None:
    lab.ssh("srv2", f"systemctl stop {core.TIMER}")
    out = run_check(lab, ["srv2"])
    assert f"{core.TIMER}: expected enabled and active, found enabled, inactive" in out, out
    assert failed("srv2", "backup.schedule") in out and "1 failed, 5 passed" in out, out
    assert outcomes(apply(lab, "backup", limit=["srv2"]), "backup") == {"srv2": "changed"}
    assert "6 passed" in run_check(lab, ["srv2"])


def test_wrong_password_is_a_clear_finding(lab: LabHandle) -> None:
    lab.ssh("srv2", f"cp -p {core.PASSWORD_FILE} /root/pw.keep && echo wrong > "
                    f"{core.PASSWORD_FILE}")
    try:
        out = run_check(lab, ["srv2"])
    finally:
        lab.ssh("srv2", f"mv -f /root/pw.keep {core.PASSWORD_FILE}")
    assert "found Fatal: wrong password or no key found" in out, out[-3000:]
    assert "4 failed, 2 passed" in out, out[-3000:]  # setup and schedule still pass
    assert "Traceback" not in out
    assert "6 passed" in run_check(lab, ["srv2"])


def test_corrupt_pack_fails_restic_check_and_restore(lab: LabHandle) -> None:
    # Damage every data pack of srv2's repository throughout (every sampled file is hit).
    lab.ssh("bak1", "for f in $(find /srv/restic/srv2/data -type f); do s=$(stat -c %s $f); "
                    "o=64; while [ $o -lt $s ]; do printf '\\377' | dd of=$f bs=1 seek=$o "
                    "conv=notrunc 2>/dev/null; o=$((o+512)); done; done")
    out = run_check(lab, ["srv2"])
    assert failed("srv2", "backup.repository") in out, out[-3000:]
    assert failed("srv2", "backup.restore") in out, out[-3000:]
    assert "does not match" in out or "ciphertext verification failed" in out, out[-3000:]
    assert "6 passed" in run_check(lab, ["srv1"])  # srv1's repository is untouched


def test_status_command(lab: LabHandle) -> None:
    result = subprocess.run([*BAOMI, "backup", "status", "-i", str(lab.inventory), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {r["host"]: r for r in json.loads(result.stdout)["hosts"]}
    assert rows["srv1"]["newest_snapshot"] and rows["srv1"]["gaps"] == []
    assert rows["srv1"]["restore_test"]["matched"] > 0
    assert rows["bak1"]["skipped"]
