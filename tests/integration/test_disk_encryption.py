"""R-ENC on a real dm-crypt kernel: the lab's VM (this machine's kernel has no device-mapper).

One VM for the module (lab e<pid>: vm1 alone, groups servers + vm, a blank virtio data disk),
a test policy whose 机密 path /srv/secure/customers lies under the volume's mount point, and
PBKDF2 with 1000 iterations so a format takes a fraction of a second.  The tests run in order
and build on each other's state, like a host's life:

fresh → check fails (blank disk, path on the plain root) → apply (format, escrow, crypttab,
fstab, mount) → check passes, re-apply unchanged → closed volume is named, systemd unlocks
it from crypttab/fstab alone (as at boot), data survives → the escrowed passphrase opens the
header (retrieval recorded) → a loop disk holding data is refused (data intact), formatted
only once the policy allows wiping it → a plain disk mounted over the sensitive path fails
the check with its device chain.
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


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("the VM lab needs root (tap device, bridge)", pytrace=False)
    tmp = tmp_path_factory.mktemp("disk-encryption")
    started = time.monotonic()
    old = os.environ.get("BAOMI_ESCROW_DIR")
    os.environ["BAOMI_ESCROW_DIR"] = str(tmp / "escrow")  # inherited by `baomi apply`
    try:
        with running_lab(f"e{os.getpid() % 10_000_000}", Request(vm=True)) as lab:
            TIMES["lab up (VM boot)"] = lab.up_seconds
            yield Env(lab, tmp)
    finally:
        if old is None:
            os.environ.pop("BAOMI_ESCROW_DIR", None)
        else:
            os.environ["BAOMI_ESCROW_DIR"] = old
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


def test_a_disk_holding_data_is_refused_until_the_policy_allows_wiping_it(env: Env) -> None:
    loop = env.run("truncate -s 64M /root/other.img && losetup --find --show /root/other.img"
                   ).strip()
    env.run(f"mkfs.ext4 -q {loop} && mkdir -p /mnt/o && mount {loop} /mnt/o && "
            "echo precious > /mnt/o/p && umount /mnt/o")
    volume = f"    - {{device: {loop}, mount: /srv/other, groups: [vm]WIPE}}\n"
    refused = apply_raw(env.lab, C, policy=write_policy(
        env.tmp, "refuse.yaml", volume.replace("WIPE", "")))
    assert refused.returncode == 1, refused.stdout
    error = json.loads(refused.stdout)["hosts"]["vm1"]["error"]
    assert f"{loop} holds a filesystem (ext4" in error and "wipe_allowed: true" in error
    assert env.run(f"mount {loop} /mnt/o && cat /mnt/o/p; umount /mnt/o") == "precious\n"
    wipe = write_policy(env.tmp, "wipe.yaml", volume.replace("WIPE", ", wipe_allowed: true"))
    assert outcomes(env.apply(wipe), C) == {"vm1": "changed"}
    assert env.run(f"blkid -p -o value -s TYPE {loop}").strip() == "crypto_LUKS"
    result = env.check(wipe)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {e["subject"] for e in json.loads(env.escrow_cmd("list", "--json").stdout)[
        "entries"]} == {DEVICE, loop}


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
