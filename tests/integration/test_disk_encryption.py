"""R-ENC on a real dm-crypt kernel: the lab's VM (this machine's kernel has no device-mapper).

One VM for the module (lab e<pid>: vm1 alone, groups servers + vm, a blank virtio data disk),
a test policy whose 机密 path /srv/secure/customers lies under the volume's mount point, and
PBKDF2 with 1000 iterations so a format takes a fraction of a second.  The tests run in order
and build on each other's state, like a host's life:

fresh → check fails (blank disk, path on the plain root) → apply (format, escrow, crypttab,
fstab, mount) → check passes, re-apply unchanged → closed volume is named, systemd unlocks
it from crypttab/fstab alone (as at boot), data survives → the escrowed passphrase opens the
header (retrieval recorded) → a loop disk holding a filesystem is refused, `wipe_allowed:
true` is a policy error, a wipe permission cannot name a disk without a serial (data intact)
→ data without any signature is refused, untouched: a detached-header LUKS, plain dm-crypt
(random-looking), a raw database (patterned) → the format script itself re-probes (a link
re-pointed, data written after the check) → a plain disk mounted over the sensitive path fails
the check with its device chain → baomi's own volume, closed as if it failed to unlock, on a
controller whose escrow lacks its UUID: never formatted, even with a wipe permission → a
permission for another serial is refused; a valid one formats once and is consumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baomi.controller.escrow import EscrowStore
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.controls import BAOMI, ROOT, apply, apply_raw, check, outcomes

C = "disk_encryption"
DEVICE = "/dev/disk/by-id/virtio-baomi-data"
MAPPER = "baomi-srv-secure"
SENSITIVE = "/srv/secure/customers"
POLICY = f"""\
sensitive_paths:
  - {{path: {SENSITIVE}, level: 机密, owner: root, group: root, groups: [vm]}}
disk_encryption:
  pbkdf: pbkdf2
  pbkdf_force_iterations: 1000
  volumes:
VOLUMES    - {{device: {DEVICE}, mount: /srv/secure, filesystem: ext4, groups: [vm]}}
"""
TIMES: dict[str, float] = {}


def failed(check_id: str) -> str:
    """pytest's line for a failed check of vm1 (one test per host x check ID)."""
    return f"FAILED checks/test_disk_encryption.py::test_check[ssh://vm1-{check_id}]"


def write_policy(directory: Path, name: str, extra_volume: str = "") -> Path:
    path = directory / name
    path.write_text(POLICY.replace("VOLUMES", extra_volume), encoding="utf-8")
    return path


class Env:
    def __init__(self, lab: LabHandle, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.escrow = tmp / "escrow"
        self.identity = tmp / "escrow.identity"  # the escrow's private key (offline for real)
        EscrowStore(self.escrow).keygen(self.identity)
        self.first_output = ""  # the first apply's output, where the secret must not appear
        self.policy = write_policy(tmp, "policy.yaml")

    def run(self, command: str) -> str:
        result = self.lab.ssh("vm1", command, timeout=120)
        assert result.returncode == 0, f"{command!r}: {result.stderr.strip()}"
        return result.stdout

    def apply(self, policy: Path | None = None) -> dict[str, Any]:
        return apply(self.lab, C, policy=policy or self.policy)

    def check(self, policy: Path | None = None) -> subprocess.CompletedProcess[str]:
        return check(self.lab, "test_disk_encryption", ["vm1"], policy=policy or self.policy)

    def escrow_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BAOMI, "escrow", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env=dict(os.environ))

    def disk(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BAOMI, "disk", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env=dict(os.environ))

    def permissions(self) -> list[dict[str, Any]]:
        listed = self.disk("permissions", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        return list(json.loads(listed.stdout)["permissions"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("the VM lab needs root (tap device, bridge)", pytrace=False)
    tmp = tmp_path_factory.mktemp("disk-encryption")
    started = time.monotonic()
    old = {k: os.environ.get(k) for k in ("BAOMI_ESCROW_DIR", "BAOMI_STATE_DIR")}
    os.environ["BAOMI_ESCROW_DIR"] = str(tmp / "escrow")  # inherited by `baomi apply`
    os.environ["BAOMI_STATE_DIR"] = str(tmp / "state")  # the wipe permissions
    try:
        with running_lab(f"e{os.getpid() % 10_000_000}", Request(vm=True)) as lab:
            TIMES["lab up (VM boot)"] = lab.up_seconds
            yield Env(lab, tmp)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        TIMES["module"] = time.monotonic() - started
        print("\nR-ENC VM test times: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))


def test_fresh_vm_fails_with_a_blank_disk_and_the_path_on_the_plain_root(env: Env) -> None:
    result = env.check()
    assert result.returncode == 1, result.stdout[-3000:]
    assert "found TYPE none (blank)" in result.stdout
    # The header and the placement fail; key file, tables and mount wait for a header; vm1's
    # groups need no encrypted root.
    assert failed("disk_encryption.luks_header") in result.stdout
    assert failed("disk_encryption.sensitive_paths") in result.stdout
    assert "2 failed, 5 skipped" in result.stdout, result.stdout[-3000:]
    assert (f"{SENSITIVE} (via /srv, not created yet) → mount / (ext4) → /dev/vda (disk, ext4): "
            "no crypt mapping") in result.stdout, result.stdout[-3000:]


def test_apply_formats_escrows_first_and_the_check_passes(env: Env) -> None:
    started = time.monotonic()
    raw = apply_raw(env.lab, C, policy=env.policy)
    TIMES["first apply"] = time.monotonic() - started
    assert raw.returncode == 0, raw.stdout + raw.stderr[-3000:]
    assert outcomes(json.loads(raw.stdout), C) == {"vm1": "changed"}
    env.first_output = raw.stdout + raw.stderr  # the secret is looked for there once shown
    luks_uuid = env.run(f"blkid -p -o value -s UUID {DEVICE}").strip()
    entries = json.loads(env.escrow_cmd("list", "--json").stdout)["entries"]
    assert [(e["host"], e["subject"], e["meta"]["luks_uuid"], e["meta"]["key_slot"])
            for e in entries] == [("vm1", DEVICE, luks_uuid, 1)]
    assert (env.escrow / "entries.jsonl").stat().st_mode & 0o777 == 0o600
    assert env.run(f"stat -c '%a %U' /etc/baomi/keys/{MAPPER}.key").split() == ["400", "root"]
    assert env.run("ls -A /run/baomi-secrets") == ""  # the recovery file is gone
    dump = env.run(f"cryptsetup luksDump {DEVICE}")
    assert "Version:       \t2" in dump and "cipher: aes-xts-plain64" in dump
    assert dump.count("PBKDF:      pbkdf2") == 2  # key file + recovery passphrase
    assert env.run(f"grep {MAPPER} /etc/crypttab").split() == [
        MAPPER, f"UUID={luks_uuid}", f"/etc/baomi/keys/{MAPPER}.key", "luks"]
    assert f"/dev/mapper/{MAPPER} /srv/secure ext4" in env.run("cat /etc/fstab")
    assert "crypt /srv/secure" in env.run("lsblk -nr -o TYPE,MOUNTPOINTS /dev/vdb").splitlines()
    result = env.check()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 passed, 1 skipped" in result.stdout, result.stdout[-3000:]  # root: not vm1's
    started = time.monotonic()
    assert outcomes(env.apply(), C) == {"vm1": "unchanged"}
    TIMES["re-apply"] = time.monotonic() - started
    assert len(json.loads(env.escrow_cmd("list", "--json").stdout)["entries"]) == 1


def test_closed_volume_is_named_and_unlocks_from_crypttab_with_data(env: Env) -> None:
    env.run(f"mkdir -p {SENSITIVE} && echo customer-42 > {SENSITIVE}/record && sync")
    env.run(f"umount /srv/secure && cryptsetup close {MAPPER}")
    result = env.check()
    assert result.returncode == 1
    assert f"expected open as /dev/mapper/{MAPPER}, found not open" in result.stdout
    assert failed("disk_encryption.mounted") in result.stdout
    assert (f"{SENSITIVE} (via /srv/secure, not created yet) → mount / (ext4) → /dev/vda") in \
        result.stdout, result.stdout[-3000:]
    # What boot does: systemd's generators turn crypttab + fstab into units; key file unlocks.
    env.run("systemctl daemon-reload && systemctl start srv-secure.mount")
    assert env.run(f"cat {SENSITIVE}/record") == "customer-42\n"
    assert env.check().returncode == 0
    # The deploy reopens a closed volume by itself too.
    env.run("systemctl stop srv-secure.mount && systemctl stop "
            "'systemd-cryptsetup@baomi\\x2dsrv\\x2dsecure.service'")
    assert outcomes(env.apply(), C) == {"vm1": "changed"}
    assert env.run(f"cat {SENSITIVE}/record") == "customer-42\n"


def test_escrowed_passphrase_opens_the_volume_and_the_retrieval_is_recorded(env: Env) -> None:
    shown = env.escrow_cmd("show", "vm1", DEVICE, "--reason", "R-ENC recovery drill",
                           "--identity", str(env.identity), "--json")
    assert shown.returncode == 0, shown.stderr
    secret = json.loads(shown.stdout)["secret"]
    assert env.first_output and secret not in env.first_output  # never echoed by the apply
    assert len(secret) == 47
    env.run(f"umount /srv/secure && cryptsetup close {MAPPER}")
    opened = subprocess.run(
        ["ssh", "-F", str(env.lab.ssh_config), "vm1",
         f"cryptsetup open --key-slot 1 --key-file - {DEVICE} rescue && mkdir -p /mnt/rescue "
         f"&& mount -o ro /dev/mapper/rescue /mnt/rescue && cat /mnt/rescue/customers/record; "
         "umount /mnt/rescue; cryptsetup close rescue"],
        input=secret, capture_output=True, text=True, timeout=120)
    assert opened.stdout == "customer-42\n", opened.stderr
    retrievals = [json.loads(line) for line in
                  (env.escrow / "retrievals.jsonl").read_text().splitlines()]
    assert [(r["host"], r["subject"], r["reason"]) for r in retrievals] == [
        ("vm1", DEVICE, "R-ENC recovery drill")]
    assert outcomes(env.apply(), C) == {"vm1": "changed"}  # reopened and mounted again
    assert env.check().returncode == 0


def test_a_filesystem_is_refused_and_a_permanent_wipe_allowed_is_a_policy_error(
        env: Env) -> None:
    loop = env.run("truncate -s 64M /root/other.img && losetup --find --show /root/other.img"
                   ).strip()
    env.run(f"mkfs.ext4 -q {loop} && mkdir -p /mnt/o && mount {loop} /mnt/o && "
            "echo precious > /mnt/o/p && umount /mnt/o")
    volume = f"    - {{device: {loop}, mount: /srv/other, groups: [vm]WIPE}}\n"
    # The old permanent, group-wide permission: a policy error naming the one-time command.
    wipe = apply_raw(env.lab, C, policy=write_policy(
        env.tmp, "wipe.yaml", volume.replace("WIPE", ", wipe_allowed: true")))
    assert env.run(f"blkid -p -o value -s TYPE {loop}").strip() == "ext4", wipe.stdout
    assert wipe.returncode == 2, wipe.stdout
    problem = wipe.stdout + wipe.stderr
    assert "wipe_allowed" in problem and "baomi disk allow-wipe" in problem, problem
    refuse = write_policy(env.tmp, "refuse.yaml", volume.replace("WIPE", ""))
    refused = apply_raw(env.lab, C, policy=refuse)
    assert refused.returncode == 1, refused.stdout
    error = json.loads(refused.stdout)["hosts"]["vm1"]["error"]
    assert f"refused: {loop}: holds " in error and "TYPE=ext4" in error, error
    assert "(blkid -p): not blank; it has no serial, so no wipe of it can be allowed" in error
    # A loop device has no serial: a wipe permission cannot name it, so it is refused too.
    assert env.disk("allow-wipe", "vm1", loop, "--serial", "x", "--ticket", "CHG-0"
                    ).returncode == 0
    no_serial = apply_raw(env.lab, C, policy=refuse)
    assert no_serial.returncode == 1, no_serial.stdout
    assert "has no serial or WWN" in json.loads(no_serial.stdout)["hosts"]["vm1"]["error"]
    assert env.run(f"mount {loop} /mnt/o && cat /mnt/o/p; umount /mnt/o") == "precious\n"
    assert env.permissions()[0]["state"] == "open"  # refused: not consumed


KEY = "/root/scenario.key"
FILL = "head -c $(blockdev --getsize64 /dev/mapper/{m}) /dev/zero > /dev/mapper/{m}"
# Data with no signature blkid or wipefs knows, each closed as it would be at rest.
UNKNOWN_DATA = {
    "detached-header LUKS": (
        "truncate -s 16M /root/det.hdr && cryptsetup luksFormat --batch-mode --type luks2 "
        "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --header /root/det.hdr "
        f"--key-file {KEY} {{loop}} && cryptsetup open --header /root/det.hdr --key-file {KEY} "
        f"{{loop}} det && {FILL.format(m='det')} && cryptsetup close det", "looks random"),
    "plain dm-crypt": (
        "cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 "
        f"--key-file {KEY} {{loop}} pl && {FILL.format(m='pl')} && cryptsetup close pl",
        "looks random"),
    "raw database": (
        "yes 'customer-0042|Zhang San|+86 138 0000 0000|Beijing' | head -c 67108864 > {loop}",
        "holds data"),
}


def unknown_data_is_refused_and_untouched(env: Env, scenario: str) -> None:
    setup, found = UNKNOWN_DATA[scenario]
    slug = scenario.split()[0].replace("-", "")
    loop = env.run(f"truncate -s 64M /root/{slug}.img && losetup --find --show /root/{slug}.img"
                   ).strip()
    env.run(f"[ -e {KEY} ] || head -c 64 /dev/urandom > {KEY}; " + setup.format(loop=loop))
    before = env.run(f"sha256sum < {loop}")
    assert env.lab.ssh("vm1", f"blkid -p {loop}").returncode == 2  # no signature at all
    refused = apply_raw(env.lab, C, policy=write_policy(
        env.tmp, f"{slug}.yaml", f"    - {{device: {loop}, mount: /srv/{slug}, groups: [vm]}}\n"))
    assert refused.returncode == 1, f"{scenario}: formatted\n{refused.stdout}"
    error = json.loads(refused.stdout)["hosts"]["vm1"]["error"]
    assert f"refused: {loop}: " in error and found in error, error
    assert env.run(f"sha256sum < {loop}") == before
    assert loop not in {e["subject"] for e in json.loads(
        env.escrow_cmd("list", "--json").stdout)["entries"]}
    env.run(f"losetup -d {loop} && rm /root/{slug}.img")


def test_detached_header_luks_data_is_refused(env: Env) -> None:
    unknown_data_is_refused_and_untouched(env, "detached-header LUKS")


def test_plain_dm_crypt_device_is_refused(env: Env) -> None:
    unknown_data_is_refused_and_untouched(env, "plain dm-crypt")


def test_raw_database_device_is_refused(env: Env) -> None:
    unknown_data_is_refused_and_untouched(env, "raw database")


def test_format_script_re_probes_the_device_right_before_luks_format(env: Env) -> None:
    """Checked blank, then changed before the script runs: the script itself refuses."""
    from baomi.controls.contract import HostContext
    from baomi.controls.disk_encryption import desired
    from baomi.fixes import disk_encryption as fix
    from baomi.policy import load

    blank, data = (env.run(f"truncate -s 64M /root/{n}.img && losetup --find --show "
                           f"/root/{n}.img").strip() for n in ("blank", "db"))
    env.run(f"yes 'order-17|Li Si' | head -c 4194304 > {data} && ln -sfn {blank} /root/disk")
    want = desired(HostContext.of(load(write_policy(env.tmp, "race.yaml", "    - {device: "
                                                    "/root/disk, mount: /srv/race, groups: "
                                                    "[vm]}\n")), {"servers", "vm"}))
    v = want.volumes[0]

    def run_format(device_real: str) -> subprocess.CompletedProcess[str]:
        env.run("mkdir -p -m 0700 /run/baomi-secrets && echo pass > /run/baomi-secrets/r")
        text = fix.format_script(want, v, "vm1", "0b8a3c2e-5b5e-4b43-9d35-111111111111",
                                 "/run/baomi-secrets/r", device_real, None)
        return env.lab.ssh("vm1", text, timeout=120)

    before = env.run(f"sha256sum < {data}")
    env.run(f"ln -sfn {data} /root/disk")  # the link now points elsewhere
    moved = run_format(blank)
    assert moved.returncode != 0
    assert f"refused: /root/disk: now resolves to {data}, not {blank}" in moved.stderr
    env.run(f"yes 'order-18|Wang Wu' | head -c 4194304 > {blank} && ln -sfn {blank} /root/disk")
    filled = run_format(blank)
    assert filled.returncode != 0 and "refused: /root/disk: " in filled.stderr
    assert "holds data" in filled.stderr, filled.stderr
    assert env.run(f"sha256sum < {data}") == before
    for loop in (blank, data):
        assert env.lab.ssh("vm1", f"blkid -p {loop}").returncode == 2  # still no header
    assert "srv-race" not in env.run("ls -A /run/baomi-secrets /etc/baomi/keys")
    env.run(f"rm /root/disk && losetup -d {blank} {data} && rm /root/blank.img /root/db.img")


def test_sensitive_path_on_a_plain_disk_fails_with_its_device_chain(env: Env) -> None:
    loop = env.run("truncate -s 64M /root/plain.img && losetup --find --show /root/plain.img"
                   ).strip()
    env.run(f"mkfs.ext4 -q {loop} && mount {loop} {SENSITIVE}")
    result = env.check()
    assert result.returncode == 1
    assert failed("disk_encryption.sensitive_paths") in result.stdout
    assert "1 failed, 5 passed, 1 skipped" in result.stdout, result.stdout[-3000:]
    assert (f"[R-ENC 加密存储] {SENSITIVE} (机密): expected on an open LUKS (dm-crypt) mapping "
            f"with cipher in aes-xts-plain64 and key ≥ 512 bits, found {SENSITIVE} → mount "
            f"{SENSITIVE} (ext4) → {loop} (loop, ext4): no crypt mapping") in result.stdout, \
        result.stdout[-3000:]
    env.run(f"umount {SENSITIVE} && losetup -d {loop}")
    assert env.check().returncode == 0


def luks_uuid(env: Env) -> str:
    return env.run(f"blkid -p -o value -s UUID {DEVICE}").strip()


def test_own_luks_volume_that_failed_to_unlock_is_never_formatted_even_with_a_wipe_token(
        env: Env) -> None:
    env.run(f"umount /srv/secure && cryptsetup close {MAPPER}")  # as if unlock failed at boot
    ours = luks_uuid(env)
    wipe = env.tmp / "wipe-own.yaml"
    wipe.write_text(env.policy.read_text().replace("groups: [vm]}\n", "groups: [vm], "
                                                   "wipe_allowed: true}\n"), encoding="utf-8")
    other = env.tmp / "escrow-of-another-controller"
    os.environ["BAOMI_ESCROW_DIR"] = str(other)  # whose escrow lacks this UUID
    try:
        apply_raw(env.lab, C, policy=wipe)
        assert luks_uuid(env) == ours, "the policy's wipe_allowed reformatted baomi's volume"
        assert env.disk("allow-wipe", "vm1", DEVICE, "--serial", "baomi-data", "--ticket",
                        "CHG-1").returncode == 0
        refused = apply_raw(env.lab, C, policy=env.policy)
    finally:
        os.environ["BAOMI_ESCROW_DIR"] = str(env.escrow)
    assert refused.returncode == 1, refused.stdout
    error = json.loads(refused.stdout)["hosts"]["vm1"]["error"]
    assert f"{DEVICE} holds a LUKS header (UUID {ours})" in error, error
    assert "never" in error
    assert luks_uuid(env) == ours
    assert [(p["ticket"], p["state"]) for p in env.permissions() if p["device"] == DEVICE] == [
        ("CHG-1", "open")]
    assert outcomes(env.apply(), C) == {"vm1": "changed"}  # this controller reopens it
    assert env.run(f"cat {SENSITIVE}/record") == "customer-42\n"


def test_wipe_token_for_another_serial_is_refused_and_a_valid_one_formats_once(
        env: Env) -> None:
    database = (f"umount /srv/secure && cryptsetup close {MAPPER} && wipefs --all --quiet "
                f"{DEVICE} && yes 'customer-0042|Zhang San' | head -c 67108864 > {DEVICE}")
    env.run(database)  # the operator retired the volume; a database now sits on the disk
    before = env.run(f"head -c 67108864 {DEVICE} | sha256sum")
    assert env.disk("allow-wipe", "vm1", DEVICE, "--serial", "not-this-disk", "--ticket",
                    "CHG-2").returncode == 0
    wrong = apply_raw(env.lab, C, policy=env.policy)
    assert wrong.returncode == 1, wrong.stdout
    error = json.loads(wrong.stdout)["hosts"]["vm1"]["error"]
    assert "serial" in error and "not-this-disk" in error and "baomi-data" in error, error
    assert env.run(f"head -c 67108864 {DEVICE} | sha256sum") == before
    assert env.disk("allow-wipe", "vm1", DEVICE, "--serial", "baomi-data", "--ticket",
                    "CHG-3").returncode == 0
    assert outcomes(env.apply(), C) == {"vm1": "changed"}
    formatted = luks_uuid(env)
    states = {p["ticket"]: p for p in env.permissions() if p["device"] == DEVICE}
    assert {t: p["state"] for t, p in states.items()} == {
        "CHG-1": "superseded", "CHG-2": "superseded", "CHG-3": "consumed"}
    assert states["CHG-3"]["luks_uuid"] == formatted
    assert env.check().returncode == 0
    env.run(database)  # the same token cannot be used a second time
    again = apply_raw(env.lab, C, policy=env.policy)
    assert again.returncode == 1, again.stdout
    assert "holds data" in json.loads(again.stdout)["hosts"]["vm1"]["error"]
    assert env.run(f"head -c 67108864 {DEVICE} | sha256sum") == before
    assert [p["state"] for p in env.permissions() if p["ticket"] == "CHG-3"] == ["consumed"]


def test_at_a_collector_a_new_volume_is_escrowed_there_and_a_second_controller_opens_it(
        env: Env) -> None:
    """This flow once against a collector (loopback, TLS) as the system of record: the local
    escrow and wipe records move in (``baomi collector import``, each verified); with
    ``collector.records: collector`` a blank disk is formatted and its recovery secret escrowed
    at the collector, none locally; a second controller (its own state dir and login)
    retrieves it with a reason, recorded there, and the secret opens the volume on the VM."""
    from tests.collector.conftest import init_folder, serve

    folder = env.tmp / "collector"
    collector = serve(folder, init_folder(folder))
    loop = ""
    try:
        url = f"https://127.0.0.1:{collector.port}"
        loop = env.run("truncate -s 64M /root/col.img && losetup --find --show /root/col.img"
                       ).strip()
        policy = env.tmp / "records-collector.yaml"
        policy.write_text(
            "sensitive_paths:\n"
            "  - {path: /srv/colvol/customers, level: 机密, owner: root, group: root, "
            "groups: [vm]}\n"
            "disk_encryption:\n  pbkdf: pbkdf2\n  pbkdf_force_iterations: 1000\n  volumes:\n"
            f"    - {{device: {loop}, mount: /srv/colvol, filesystem: ext4, groups: [vm]}}\n"
            f'collector:\n  url: "{url}"\n  records: collector\n', encoding="utf-8")
        a_env = dict(os.environ, BAOMI_POLICY=str(policy))  # this module's state and escrow
        b_root = env.tmp / "controller-b"
        b_env = dict(os.environ, BAOMI_STATE_DIR=str(b_root / "state"),
                     BAOMI_ESCROW_DIR=str(b_root / "escrow"), BAOMI_POLICY=str(policy))

        def baomi(environ: dict[str, str], *args: str, stdin: str = ""
                  ) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([*BAOMI, *args], cwd=ROOT, env=environ, input=stdin,
                                  capture_output=True, text=True, timeout=120)
            assert "Traceback" not in done.stderr, done.stderr
            return done

        for environ in (a_env, b_env):
            login = baomi(environ, "login", "--collector", url, "--ca", collector.ca, "--user",
                          "admin", "--password-stdin", stdin=collector.admin_password + "\n")
            assert login.returncode == 0, login.stderr
        local_before = json.loads(baomi(dict(os.environ), "escrow", "list", "--json").stdout)
        imported = baomi(a_env, "collector", "import")
        assert imported.returncode == 0 and "each verified" in imported.stdout, \
            imported.stdout + imported.stderr

        assert outcomes(apply(env.lab, C, policy=policy), C) == {"vm1": "changed"}
        assert env.check(policy).returncode == 0

        listed = json.loads(baomi(b_env, "escrow", "list", "--json").stdout)
        assert listed["store"] == url
        subjects = [(e["host"], e["subject"]) for e in listed["entries"]]
        assert ("vm1", loop) in subjects and ("vm1", DEVICE) in subjects, subjects  # + imported
        local_after = json.loads(baomi(dict(os.environ), "escrow", "list", "--json").stdout)
        assert local_after == local_before  # the new secret went to the collector only
        shown = baomi(b_env, "escrow", "show", "vm1", loop, "--reason", "R-ENC drill, collector",
                      "--identity", str(env.identity), "--json")
        assert shown.returncode == 0, shown.stderr
        secret = json.loads(shown.stdout)["secret"]
        opened = subprocess.run(
            ["ssh", "-F", str(env.lab.ssh_config), "vm1",
             f"cryptsetup open --test-passphrase --key-slot 1 --key-file - {loop}"],
            input=secret, capture_output=True, text=True, timeout=120)
        assert opened.returncode == 0, opened.stderr
        retrievals = collector.client(collector.it).get("/api/v1/records/escrow-retrievals")
        got = [(r["record"]["host"], r["record"]["reason"]) for r in retrievals.body["records"]]
        assert ("vm1", "R-ENC drill, collector") in got, got  # beside the imported ones
    finally:
        collector.stop()
        if loop:
            env.lab.ssh("vm1", "umount /srv/colvol; for m in /dev/mapper/baomi-*colvol*; do "
                        "cryptsetup close \"$m\"; done; losetup -d " + loop
                        + "; rm -f /root/col.img", timeout=60)
