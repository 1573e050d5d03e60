"""disk_encryption (R-ENC): parsers, decisions and compare on output captured from lab hosts.

Captures (tests/unit/data/disk_encryption/, the control's own observe script run over ssh):
vm-blank (fresh VM, blank data disk), vm-applied (after `baomi apply`: LUKS2 open and
mounted), vm-loop-ext4 / vm-loop-foreign-luks (a second volume on a loop device holding an
ext4 filesystem / a LUKS header baomi did not make), vm-path-on-plain (a plain ext4 loop disk
mounted over the sensitive path), container-server / container-workstation (lab containers
on overlayfs, default policy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from baomi.controls import disk_encryption as core
from baomi.controls.contract import FAIL, NOT_APPLICABLE, PASS, Check, HostContext, evaluate
from baomi.findings import Finding
from baomi.fixes import disk_encryption as fix
from baomi.policy import Policy, PolicyError, load, load_text

DATA = Path(__file__).parent / "data" / "disk_encryption"
ROOT = Path(__file__).resolve().parents[2]
VM_GROUPS = {"servers", "vm"}
OURS = "70c77f6a-9459-48cd-ae51-99537207aa63"  # the header `baomi apply` made in vm-applied
# The policy the vm-* captures were made under (also the contract test's, contract.json).
VM_POLICY = (DATA / "vm-policy.yaml").read_text(encoding="utf-8")
LOOP = "    - {device: /dev/loop0, mount: /srv/other, groups: [vm]}\n"
# Verdicts of fix.gate_script, as it printed them on a real loop device (blank, then holding
# `yes` output, urandom bytes, an ext4 filesystem) and for /dev/null.
GATE_BLANK = fix.Gate(True, "/dev/loop0 (/dev/loop0): blank (no signature by blkid -p or "
                      "wipefs; first, middle and last MiB each one repeated byte), not in use")
LOOP_HINT = ("it has no serial, so no wipe of it can be allowed: move its data off and clear it "
             "by hand, or give baomi a blank device")
GATE_DATA = fix.Gate(False, "refused: /dev/loop0: holds data: the MiB at byte 0 is not one "
                     "repeated byte (4.22 bits/byte: a raw database or a format blkid does not "
                     f"know); not blank; {LOOP_HINT}")
GATE_EXT4 = fix.Gate(False, "refused: /dev/loop0: holds UUID=4cb97ba3-f954-4d52-a82d-"
                     f"e5c35de37ed8 TYPE=ext4 (blkid -p): not blank; {LOOP_HINT}")
GATE_NO_SERIAL = fix.Gate(False, "refused: /dev/loop0: has no serial or WWN (a loop device?): "
                          "a wipe permission names a disk by its serial, so this one is never "
                          "wiped; move its data off and clear it by hand, or give baomi a "
                          "blank device")
GATE_WIPE = fix.Gate(True, "/dev/vdb (/dev/vdb, serial baomi-data): not in use, no LUKS "
                     "header; one wipe allowed")


def desired(policy: Policy, groups: set[str]) -> core.Desired:
    return core.desired(HostContext.of(policy, groups))


def vm_want(loop: bool = False) -> core.Desired:
    text = VM_POLICY
    if loop:  # the second volume, listed first (as the captures were made)
        text = text.replace("  volumes:\n", "  volumes:\n" + LOOP)
    return desired(load_text(text), VM_GROUPS)


def seen(name: str, want: core.Desired) -> core.Observed:
    return core.parse((DATA / f"{name}.txt").read_text(encoding="utf-8"), want)


def texts(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def of(check: Check, findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.check == check.id]


def test_policy_names_the_mapping_after_the_mount_and_validates_it() -> None:
    v = load_text(VM_POLICY).disk_encryption.volumes[0]
    assert v.name == "baomi-srv-secure"
    volume = "       groups: [vm]}"
    named = load_text(VM_POLICY.replace(volume, volume[:-1] + ", name: data0}"))
    assert named.disk_encryption.volumes[0].name == "data0"
    with pytest.raises(PolicyError, match="is not a device-mapper name"):
        load_text(VM_POLICY.replace(volume, volume[:-1] + ", name: Data 0}"))


def test_a_permanent_wipe_allowed_is_a_policy_error_naming_the_one_time_command() -> None:
    volume = "       groups: [vm]}"
    assert load_text(VM_POLICY.replace(volume, volume[:-1] + ", wipe_allowed: false}")
                     ).disk_encryption.volumes[0].name == "baomi-srv-secure"
    with pytest.raises(PolicyError) as error:
        load_text(VM_POLICY.replace(volume, volume[:-1] + ", wipe_allowed: true}"))
    assert ("disk_encryption.volumes[0].wipe_allowed: a permanent permission to wipe is no "
            "longer accepted; remove it; allow one wipe of one disk with `baomi disk "
            "allow-wipe HOST DEVICE --serial SERIAL --ticket TICKET`") in str(error.value)


def test_desired_only_encrypted_levels_and_own_groups() -> None:
    default = load(ROOT / "policy.yaml")
    servers = desired(default, {"servers"})
    assert [p.path for p in servers.paths] == ["/srv/customers", "/srv/contracts"]
    assert (servers.volumes, servers.root) == ((), False)
    ws = desired(default, {"workstations"})
    assert ws.paths == () and ws.root  # 秘密 needs no encryption; root does (require_root_on)
    off = desired(load_text("disk_encryption: {enabled: false}\n"), {"workstations"})
    assert (off.paths, off.volumes, off.root) == ((), (), False)


def test_applied_vm_complies_and_every_part_is_read() -> None:
    want = vm_want()
    s = seen("vm-applied", want)
    assert core.compare(want, s) == []
    mapper = s.devices["/dev/mapper/baomi-srv-secure"]
    assert (mapper.type, mapper.parents, mapper.mountpoints) == (
        "crypt", ("/dev/vdb",), ("/srv/secure",))
    status = s.crypt["baomi-srv-secure"]
    assert (status.active, status.type, status.cipher, status.key_bits, status.device) == (
        True, "LUKS2", "aes-xts-plain64", 512, "/dev/vdb")
    vol = s.volumes[0]
    assert vol.real == "/dev/vdb" and vol.probe["TYPE"] == "crypto_LUKS"
    assert vol.luks is not None
    assert (vol.luks.version, vol.luks.uuid, vol.luks.cipher, vol.luks.key_bits) == (
        2, OURS, "aes-xts-plain64", 512)
    assert [(k.slot, k.pbkdf) for k in vol.luks.keyslots] == [(0, "pbkdf2"), (1, "pbkdf2")]
    assert vol.key_file == ("400", "root", "root", 64)
    assert vol.inner is not None and vol.inner["TYPE"] == "ext4"
    # Kept without asking the device check (a header is never "blank" anyway).
    assert fix.decide(want.volumes[0], vol, {OURS}, GATE_DATA).action == "keep"


def test_blank_vm_fails_with_the_chain_and_the_disk_may_be_formatted() -> None:
    want = vm_want()
    s = seen("vm-blank", want)
    findings = core.compare(want, s)
    assert "found TYPE none (blank)" in texts(of(core.LUKS_HEADER, findings))
    assert ("/srv/secure/customers (via /srv, not created yet) → mount / (ext4) → /dev/vda "
            "(disk, ext4): no crypt mapping") in texts(of(core.PATHS, findings))
    # Key file, tables and mount are not judged before a header exists: not applicable.
    result = evaluate(core.CONTROL, "vm1", want, s)
    assert {c.id for c in core.CHECKS if result.status(c.id) == FAIL} == {
        core.LUKS_HEADER.id, core.PATHS.id}
    assert result.not_applicable[core.KEY_FILE.id] == (
        "no LUKS header on /dev/disk/by-id/virtio-baomi-data yet (disk_encryption.luks_header)")
    decision = fix.decide(want.volumes[0], s.volumes[0], set(), GATE_BLANK)
    assert (decision.action, decision.reason, decision.permission) == (
        "format", GATE_BLANK.text, None)
    # No signature is not enough: the host's device check decides (data, random bytes ...).
    assert fix.decide(want.volumes[0], s.volumes[0], set(), GATE_DATA) == fix.Decision(
        "refuse", GATE_DATA.text)
    assert s.volumes[0].probe == {} and s.volumes[0].probe_failed is None


def test_data_is_formatted_only_under_a_wipe_permission_the_host_accepts() -> None:
    want = vm_want(loop=True)
    s = seen("vm-loop-ext4", want)
    loop = want.volumes[0]
    assert loop.device == "/dev/loop0"
    assert fix.decide(loop, s.volumes[0], set(), GATE_EXT4) == fix.Decision(
        "refuse", GATE_EXT4.text)
    # A permission the host's check refuses (no serial, another serial, in use): refused,
    # naming the permission; one it accepts: formatted, using the permission up.
    refused = fix.decide(loop, s.volumes[0], set(), GATE_EXT4, "a1b2", GATE_NO_SERIAL)
    assert refused == fix.Decision("refuse", f"{GATE_NO_SERIAL.text} (wipe permission a1b2)")
    assert fix.decide(loop, s.volumes[0], set(), GATE_EXT4, "a1b2", GATE_WIPE) == \
        fix.Decision("format", GATE_WIPE.text, "a1b2")
    # Its own (escrowed) header next to it stays; without the escrow entry it is refused.
    assert fix.decide(want.volumes[1], s.volumes[1], {OURS}, GATE_EXT4).action == "keep"


def test_a_luks_header_this_controller_did_not_escrow_is_never_formatted() -> None:
    want = vm_want(loop=True)
    s = seen("vm-loop-foreign-luks", want)
    for permission, wipe in ((None, None), ("a1b2", GATE_WIPE)):
        decision = fix.decide(want.volumes[0], s.volumes[0], {OURS}, GATE_BLANK, permission,
                              wipe)
        assert decision.action == "refuse" and decision.permission is None
        assert decision.reason.startswith(
            "/dev/loop0 holds a LUKS header (UUID 212f3151-942e-443c-a9d5-f6cc0e49b1f7) whose "
            "recovery key this controller has not escrowed: never formatted, whatever the "
            "permission (a wipe permission included)")
    assert fix.decide(want.volumes[0], s.volumes[0], {"212f3151-942e-443c-a9d5-f6cc0e49b1f7"},
                      GATE_DATA).action == "keep"
    # baomi's own volume, closed (failed to unlock), on a controller without its UUID.
    applied = seen("vm-applied", vm_want())
    assert fix.decide(vm_want().volumes[0], applied.volumes[0], set(), GATE_BLANK, "a1b2",
                      GATE_WIPE).action == "refuse"


def test_missing_device_is_refused() -> None:
    want = desired(load_text(VM_POLICY.replace("virtio-baomi-data", "virtio-nothing")),
                   VM_GROUPS)
    gone = core.VolumeSeen("/dev/disk/by-id/virtio-nothing", False, None, {}, None, None, None,
                           None)
    decision = fix.decide(want.volumes[0], gone, set(), GATE_BLANK)
    assert (decision.action, decision.reason) == (
        "refuse", "/dev/disk/by-id/virtio-nothing does not exist on this host")


def test_sensitive_path_on_a_plain_disk_fails_with_evidence() -> None:
    want = vm_want()
    s = seen("vm-path-on-plain", want)
    findings = core.compare(want, s)
    assert len(findings) == 1
    f = findings[0]
    assert (f.check, f.subject, f.severity) == (core.PATHS.id, "/srv/secure/customers (机密)",
                                                "high")
    assert f.found == ("/srv/secure/customers → mount /srv/secure/customers (ext4) → "
                       "/dev/loop1 (loop, ext4): no crypt mapping")


def test_containers_cannot_comply_and_say_why() -> None:
    default = load(ROOT / "policy.yaml")
    srv = desired(default, {"servers"})
    found = core.compare(srv, seen("container-server", srv))
    assert [f.subject for f in found] == ["/srv/customers (机密)", "/srv/contracts (绝密)"]
    assert {f.check for f in found} == {core.PATHS.id}
    assert [f.severity for f in found] == ["high", "critical"]
    assert all("→ mount / (overlay) → overlay (not a block device): no crypt mapping" in f.found
               for f in found)
    # The root filesystem is its own check, failing alone on the workstation.
    ws = desired(default, {"workstations"})
    s = seen("container-workstation", ws)
    root = core.compare(ws, s)
    assert [(f.check, f.found) for f in root] == [(core.ROOT.id,
        "/ → mount / (overlay) → overlay (not a block device): no crypt mapping")]


def test_each_check_without_anything_to_look_at_is_not_applicable_with_its_reason() -> None:
    default = load(ROOT / "policy.yaml")
    ws = desired(default, {"workstations"})
    result = evaluate(core.CONTROL, "ws1", ws, seen("container-workstation", ws))
    assert result.status(core.ROOT.id) == FAIL
    assert result.not_applicable[core.PATHS.id] == (
        "no sensitive path of a level with encryption: true for this host's groups")
    assert all(result.status(c.id) == NOT_APPLICABLE for c in core.VOLUME_CHECKS)
    srv = desired(default, {"servers"})
    result = evaluate(core.CONTROL, "srv1", srv, seen("container-server", srv))
    assert result.not_applicable[core.ROOT.id] == "this host's groups are not in require_root_on"
    applied = evaluate(core.CONTROL, "vm1", vm_want(), seen("vm-applied", vm_want()))
    assert {c.id: applied.status(c.id) for c in core.CHECKS} == {
        **{c.id: PASS for c in (*core.VOLUME_CHECKS, core.PATHS)}, core.ROOT.id: NOT_APPLICABLE}
    off = desired(load_text("disk_encryption: {enabled: false}\n"), {"workstations"})
    assert core.not_applicable(off) == "policy: disk_encryption.enabled is false"
    assert core.not_applicable(srv) is None


def test_weak_cipher_and_short_key_on_the_mapping_fail() -> None:
    want = vm_want()
    text = (DATA / "vm-applied.txt").read_text(encoding="utf-8")
    weak = text.replace("  cipher:  aes-xts-plain64\n  keysize: 512 bits",
                        "  cipher:  aes-cbc-essiv:sha256\n  keysize: 256 bits")
    assert weak != text
    found = texts(of(core.PATHS, core.compare(want, core.parse(weak, want))))
    assert "baomi-srv-secure cipher aes-cbc-essiv:sha256 not approved" in found
    short = text.replace("  keysize: 512 bits", "  keysize: 256 bits")
    assert "baomi-srv-secure key 256 bits" in texts(
        of(core.PATHS, core.compare(want, core.parse(short, want))))


def test_tampered_key_file_tables_and_closed_mapping_are_named() -> None:
    want = vm_want()
    text = (DATA / "vm-applied.txt").read_text(encoding="utf-8")
    tampered = (text.replace("400 root root 64", "644 root root 64")
                .replace(f"baomi-srv-secure UUID={OURS}", "baomi-srv-secure UUID=other"))
    found = core.compare(want, core.parse(tampered, want))
    by = {f.subject: f for f in found}
    key = by["/etc/baomi/keys/baomi-srv-secure.key"]
    assert (key.check, key.found, key.severity) == (core.KEY_FILE.id, "root:root 0644",
                                                   "critical")
    crypttab = by["/etc/crypttab baomi-srv-secure"]
    assert crypttab.check == core.CRYPTTAB_LINE.id and "UUID=other" in crypttab.found
    closed = text.replace("### baomi-srv-secure\n", "### gone\n")
    closed_found = of(core.MOUNTED, core.compare(want, core.parse(closed, want)))
    assert "not open" in texts(closed_found)


def test_lsblk_chain_through_lvm_on_luks_and_btrfs_subvolume() -> None:
    tree = {"blockdevices": [{"name": "sda", "path": "/dev/sda", "type": "disk", "children": [
        {"name": "sda2", "path": "/dev/sda2", "type": "part", "fstype": "crypto_LUKS",
         "children": [{"name": "luks-x", "path": "/dev/mapper/luks-x", "type": "crypt",
                       "children": [{"name": "vg-home", "path": "/dev/mapper/vg-home",
                                     "type": "lvm", "mountpoints": ["/home"]}]}]}]}]}
    devices = core.parse_lsblk(json.dumps(tree))
    observed = core.Observed(devices, {}, None, None, None, {}, ())
    chain = [d.path for d in observed.chain("/dev/mapper/vg-home")]
    assert chain == ["/dev/mapper/vg-home", "/dev/mapper/luks-x", "/dev/sda2", "/dev/sda"]
    assert [d.path for d in observed.chain("/dev/sda2[/@home]")] == ["/dev/sda2", "/dev/sda"]
    assert core.parse_lsblk("not json") == {}


def test_format_script_carries_no_secret_and_removes_the_recovery_file() -> None:
    from baomi.deploy.disk_encryption import recovery_passphrase

    want = vm_want()
    v = want.volumes[0]
    secret = recovery_passphrase()
    assert len(secret) == 47 and secret.count("-") == 7
    assert recovery_passphrase() != secret
    dev, real = "/dev/disk/by-id/virtio-baomi-data", "/dev/vdb"
    text = fix.format_script(want, v, "vm1", OURS, "/run/baomi-secrets/x.recovery", real, None)
    assert secret not in text
    lines = text.splitlines()
    new = "/etc/baomi/keys/baomi-srv-secure.key.baomi-new"
    assert lines[:3] == ["set -e", f"trap 'rm -f /run/baomi-secrets/x.recovery {new}' EXIT",
                         "umask 077"]
    assert "wipefs --all" not in text
    # The device check runs in the script, on the device as it resolved when decided, right
    # before luksFormat; the new key replaces the old one only once the header is made.
    gate = fix.gate_script("vm1", dev, real)
    assert f"( {gate} )" in text
    assert "d=/dev/disk/by-id/virtio-baomi-data; want=/dev/vdb; serial=''" in gate
    luks_format = ("cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 "
                   "--key-size 512 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --uuid " + OURS +
                   f" --key-slot 0 --key-file {new} {dev}")
    assert text.index(f"{gate} )\n{luks_format}\n") > text.index(f"head -c 64 /dev/urandom > {new}")
    assert lines[-2].startswith("cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 ")
    assert lines[-2].endswith(f"--key-slot 1 --key-file {new} {dev} "
                              "/run/baomi-secrets/x.recovery")
    assert lines[-1] == f"mv -f {new} /etc/baomi/keys/baomi-srv-secure.key"
    wiping = fix.format_script(want, v, "vm1", OURS, "/run/r", real, "baomi-data")
    wipe_gate = fix.gate_script("vm1", dev, real, "baomi-data")
    assert "serial=baomi-data" in wipe_gate
    assert f"{wipe_gate} )\nwipefs --all --quiet {dev}\n{luks_format}" in wiping
    default = desired(load_text(VM_POLICY.replace("  pbkdf: pbkdf2\n  pbkdf_force_"
                                                  "iterations: 1000\n", "")), VM_GROUPS)
    assert "--pbkdf argon2id --uuid" in fix.format_script(default, v, "vm1", OURS, "/run/r",
                                                          real, None)


def test_wipe_permissions_are_used_once_and_a_newer_one_supersedes_an_open_one() -> None:
    from baomi.controller import wipe

    def allowed(i: str, device: str = "/dev/vdb", host: str = "vm1") -> dict[str, str]:
        return {"event": "allowed", "id": i, "host": host, "device": device, "serial": "s" + i,
                "ticket": "T" + i, "operator": "ops", "time": "2026-12-02T10:00:0" + i}

    records = [allowed("1"), allowed("2", "/dev/vdc"), allowed("3", host="vm2"),
               allowed("4"), {"event": "consumed", "id": "4", "luks_uuid": OURS,
                              "time": "2026-12-02T11:00:00"}, allowed("5"), allowed("6")]
    found = {p.id: p for p in wipe.fold(records)}
    assert {i: p.state for i, p in found.items()} == {
        "1": "superseded", "2": "open", "3": "open", "4": "consumed", "5": "superseded",
        "6": "open"}
    assert found["4"].as_json()["luks_uuid"] == OURS
    assert found["6"].as_json() == {
        "id": "6", "host": "vm1", "device": "/dev/vdb", "serial": "s6", "ticket": "T6",
        "operator": "ops", "time": "2026-12-02T10:00:06", "state": "open"}


def test_disk_allow_wipe_records_0600_and_refuses_bad_input_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from baomi.cli import main
    from baomi.controller import wipe

    monkeypatch.setenv("BAOMI_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    ok = runner.invoke(main, ["disk", "allow-wipe", "vm1", "/dev/disk/by-id/virtio-baomi-data",
                              "--serial", "baomi-data", "--ticket", "CHG-7", "--operator", "li"])
    assert ok.exit_code == 0, ok.output
    assert "allowed once: wipe /dev/disk/by-id/virtio-baomi-data on vm1 if its serial is " \
        "baomi-data (ticket CHG-7" in ok.output
    assert wipe.records_path().stat().st_mode & 0o777 == 0o600
    assert wipe.records_path().parent.stat().st_mode & 0o777 == 0o700
    opened = wipe.open_permission("vm1", "/dev/disk/by-id/virtio-baomi-data")
    assert opened is not None and (opened.serial, opened.ticket, opened.operator) == (
        "baomi-data", "CHG-7", "li")
    wipe.consume(opened, OURS)
    assert wipe.open_permission("vm1", "/dev/disk/by-id/virtio-baomi-data") is None
    listed = json.loads(runner.invoke(main, ["disk", "permissions", "--json"]).output)
    assert [(p["state"], p["luks_uuid"]) for p in listed["permissions"]] == [("consumed", OURS)]
    for args, message in (
            (["vm1", "vdb", "--serial", "s", "--ticket", "T"], "'vdb' is not a device path"),
            (["vm1", "/dev/../etc/passwd", "--serial", "s", "--ticket", "T"],
             "is not a device path"),
            (["vm 1", "/dev/vdb", "--serial", "s", "--ticket", "T"], "is not a host name"),
            (["vm1", "/dev/vdb", "--serial", " s", "--ticket", "T"], "is not a serial"),
            (["vm1", "/dev/vdb", "--serial", "s", "--ticket", " "], "give the change ticket"),
            (["vm1", "/dev/vdb", "--ticket", "T"], "Missing option '--serial'")):
        bad = runner.invoke(main, ["disk", "allow-wipe", *args])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
        assert "Traceback" not in bad.output
    assert len(wipe.permissions()) == 1


def test_table_lines() -> None:
    crypttab = "# x y z\nbaomi-a UUID=1 /k luks\nother UUID=2 none luks\n"
    assert core.table_line(crypttab, "baomi-a") == "baomi-a UUID=1 /k luks"
    fstab = "/dev/vda / ext4 rw 0 0\n/dev/mapper/baomi-a   /srv/a ext4 defaults,nofail 0 2\n"
    assert core.table_line(fstab, "", "/srv/a") == ("/dev/mapper/baomi-a /srv/a ext4 "
                                                    "defaults,nofail 0 2")
    assert core.table_line(None, "x") is None
