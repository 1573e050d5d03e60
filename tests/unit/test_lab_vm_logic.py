"""Pure logic of lab/vm.py: cache key, command lines, seed disk, PID ownership checks.

No root, no qemu: these run everywhere in well under a second.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from baomi.lab import vm
from baomi.lab.hosts import tail
from baomi.lab.image import SOURCES
from baomi.lab.vm import (
    VM_PACKAGES,
    VmError,
    VmImage,
    ensure_vm_image,
    find_vm_leftovers,
    is_our_qemu,
    kernel_append,
    mac_address,
    mmdebstrap_command,
    network_unit,
    qemu_command,
    qemu_vm_name,
    seed_archive,
    start_vm,
    stop_vm,
    tap_name,
    vm_cache_key,
)

IMAGE = VmImage(kernel=Path("/c/vmlinuz"), initrd=Path("/c/initrd.img"),
                rootfs=Path("/c/rootfs.raw"), key="k")


def _argv(*args: str) -> bytes:
    return b"\0".join(a.encode() for a in args) + b"\0"


# ---------------------------------------------------------------- cache key and build


def test_cache_key_ignores_order_and_duplicates_but_not_content() -> None:
    key = vm_cache_key(VM_PACKAGES)
    assert key == vm_cache_key(tuple(reversed(VM_PACKAGES)) + VM_PACKAGES[:2])
    assert re.fullmatch(r"[0-9a-f]{16}", key), key
    assert key != vm_cache_key((*VM_PACKAGES, "extra-package-not-in-the-image"))
    assert key != vm_cache_key(VM_PACKAGES, suite="trixie")


def test_mmdebstrap_command_builds_from_the_machine_sources_without_identity() -> None:
    argv = mmdebstrap_command(Path("/tmp/root"))
    assert argv[0] == "mmdebstrap"
    # The machine's own sources file (deb822 here; sources.list on an installer-made Debian).
    assert argv[-3:] == ["bookworm", "/tmp/root", str(SOURCES)]
    assert SOURCES.exists()
    include = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=")
    assert include.split(",") == sorted(VM_PACKAGES)
    for needed in ("linux-image-cloud-amd64", "cryptsetup", "dmsetup", "openssh-server",
                   "python3-venv"):
        assert needed in include.split(",")
    hooks = " ".join(a for a in argv if a.startswith("--customize-hook="))
    assert "ssh_host_" in hooks and "machine-id" in hooks


def test_cached_image_is_returned_without_building(tmp_path: Path) -> None:
    key = vm_cache_key()
    base = tmp_path / f"vm-{key}"
    base.mkdir()
    (base / "complete").write_text(key)
    image = ensure_vm_image(tmp_path)
    assert image == VmImage(kernel=base / "vmlinuz", initrd=base / "initrd.img",
                            rootfs=base / "rootfs.raw", key=key)


# ---------------------------------------------------------------- names and network


def test_tap_names_fit_the_kernel_limit_and_stay_distinct() -> None:
    assert tap_name("web1") == "bmv-web1"
    long_a, long_b = tap_name("a-very-long-vm-name-1"), tap_name("a-very-long-vm-name-2")
    assert len(long_a) <= 15 and len(long_b) <= 15 and long_a != long_b
    assert tap_name("a-very-long-vm-name-1") == long_a


def test_mac_is_stable_and_locally_administered() -> None:
    mac = mac_address("web1", "10.213.0.5")
    assert mac == mac_address("web1", "10.213.0.5")
    assert mac != mac_address("web2", "10.213.0.5")
    assert mac.startswith("52:54:00:") and len(mac.split(":")) == 6


def test_network_unit_has_the_address_and_no_route_out() -> None:
    unit = network_unit("52:54:00:aa:bb:cc", "10.213.0.5", 24)
    assert "MACAddress=52:54:00:aa:bb:cc" in unit
    assert "Address=10.213.0.5/24" in unit
    assert "Gateway" not in unit and "DHCP=no" in unit and "IPv6AcceptRA=no" in unit


# ---------------------------------------------------------------- seed disk


def test_seed_archive_carries_identity_with_safe_modes() -> None:
    data = seed_archive(hostname="web1", machine_id="ab" * 16, authorized_key="ssh-ed25519 K c\n",
                        host_key_private=b"PRIVATE\n", host_key_public="ssh-ed25519 HOST",
                        network="[Match]\n")
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}

        def read(name: str) -> bytes:
            fh = tar.extractfile(members[name])
            assert fh is not None
            return fh.read()

        assert read("etc/hostname") == b"web1\n"
        assert read("etc/machine-id") == b"ab" * 16 + b"\n"
        assert read("root/.ssh/authorized_keys") == b"ssh-ed25519 K c\n"
        assert read("etc/ssh/ssh_host_ed25519_key.pub") == b"ssh-ed25519 HOST\n"
        assert "etc/systemd/network/10-baomi-lab.network" in members
    assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert members["root/.ssh"].isdir() and members["root/.ssh"].mode == 0o700
    assert members["root/.ssh/authorized_keys"].mode == 0o600
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # Extracting over / must not touch the modes of existing top-level directories.
    assert not {"etc", "root", "etc/ssh", "."} & members.keys()


# ---------------------------------------------------------------- qemu command line


def test_kernel_append_boots_vda_on_serial_with_the_vm_identity() -> None:
    append = kernel_append("web1", "cd" * 16).split()
    assert {"root=/dev/vda", "rw", "console=ttyS0", "panic=-1"} <= set(append)
    assert "systemd.machine_id=" + "cd" * 16 in append
    assert "systemd.hostname=web1" in append


def test_qemu_command_is_tcg_with_fixed_disk_order_and_tap_only() -> None:
    argv = qemu_command(IMAGE, name="web1", vm_dir=Path("/s/web1"), tap="bmv-web1",
                        mac="52:54:00:01:02:03", machine_id="ef" * 16, memory_mb=768)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    assert argv[argv.index("-m") + 1] == "768"
    assert argv[argv.index("-kernel") + 1] == "/c/vmlinuz"
    assert argv[argv.index("-initrd") + 1] == "/c/initrd.img"
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert [d.split(",")[0] for d in drives] == [
        "file=/s/web1/root.qcow2", "file=/s/web1/data.qcow2", "file=/s/web1/seed.tar"]
    assert "readonly=on" in drives[2]
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs == ["tap,id=net0,ifname=bmv-web1,script=no,downscript=no"]
    assert "user" not in " ".join(netdevs) and "hostfwd" not in " ".join(argv)
    assert "-daemonize" in argv and argv[argv.index("-pidfile") + 1] == "/s/web1/qemu.pid"
    assert "path=/s/web1/console.log" in argv[argv.index("-chardev") + 1]
    assert qemu_vm_name(_argv(*argv)) == "web1"


def test_is_our_qemu_checks_binary_and_exact_name() -> None:
    ours = _argv("/usr/bin/qemu-system-x86_64", "-name", "guest=baomi-vm-web1", "-m", "1")
    assert is_our_qemu(ours, "web1")
    assert not is_our_qemu(ours, "web")
    assert not is_our_qemu(_argv("/usr/bin/qemu-system-x86_64", "-name",
                                 "guest=baomi-vm-web10"), "web1")
    assert not is_our_qemu(_argv("bash", "-name", "guest=baomi-vm-web1"), "web1")
    assert not is_our_qemu(_argv("qemu-system-x86_64", "-name", "guest=other"), "web1")
    assert not is_our_qemu(b"", "web1")
    assert qemu_vm_name(_argv("qemu-system-x86_64", "-name", "guest=baomi-vm-")) is None


def test_tail_strips_colours_and_keeps_the_end(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(f"line {i}\r\n".encode() for i in range(40))
                    + b"[\x1b[0;32m  OK  \x1b[0m] Started ssh\r\n")
    assert tail(log, 3) == "line 38 | line 39 | [  OK  ] Started ssh"
    assert tail(tmp_path / "missing") == ""


# ---------------------------------------------------------------- start/stop guards


def test_start_vm_refuses_bad_name_and_missing_bridge(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    kwargs = {"state_dir": tmp_path, "address": "10.213.250.9", "prefixlen": 24,
              "authorized_key": "ssh-ed25519 K"}
    with pytest.raises(VmError, match="VM name"):
        start_vm(IMAGE, name="Bad_Name", bridge="lo", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(VmError, match="bridge 'nosuchbr0' does not exist"):
        start_vm(IMAGE, name="web1", bridge="nosuchbr0", **kwargs)  # type: ignore[arg-type]


def test_stop_vm_is_idempotent_and_never_kills_a_foreign_pid(tmp_path: Path) -> None:
    stop_vm(tmp_path, "never-started")
    vm_dir = tmp_path / "web1"
    vm_dir.mkdir()
    # A recorded PID that now belongs to someone else (here: this test process).
    (vm_dir / vm.STATE_FILE).write_text(json.dumps(
        {"name": "web1", "pid": os.getpid(), "tap": "bmv-nosuchtap"}))
    assert find_vm_leftovers(tmp_path) == ["web1"]
    stop_vm(tmp_path, "web1")
    assert not vm_dir.exists()
    assert find_vm_leftovers(tmp_path) == []
    stop_vm(tmp_path, "web1")


def test_stop_vm_removes_only_its_own_files(tmp_path: Path) -> None:
    vm_dir = tmp_path / "web1"
    vm_dir.mkdir()
    for name in ("vm.json", "console.log", "seed.tar", "root.qcow2", "qemu.pid"):
        (vm_dir / name).write_text("{}")
    (vm_dir / "rootfs").mkdir()  # e.g. a container host's tree under the same name
    stop_vm(tmp_path, "web1")
    assert [p.name for p in vm_dir.iterdir()] == ["rootfs"]


def test_seed_archive_carries_the_labs_hosts_file_only_when_given() -> None:
    def seed(etc_hosts: str | None = None) -> bytes:
        return seed_archive(hostname="vm1", machine_id="ab" * 16, authorized_key="k",
                            host_key_private=b"P\n", host_key_public="ssh-ed25519 H",
                            network="", etc_hosts=etc_hosts)

    hosts = "127.0.0.1\tlocalhost\n10.0.0.11\tbak1\n"
    with tarfile.open(fileobj=io.BytesIO(seed(hosts))) as tar:
        member = tar.getmember("etc/hosts")
        fh = tar.extractfile(member)
        assert fh is not None and fh.read() == hosts.encode()
        assert member.mode == 0o644
    with tarfile.open(fileobj=io.BytesIO(seed())) as tar:
        assert "etc/hosts" not in tar.getnames()
