"""The lab's VM flavour: a qemu guest under software emulation with a real Debian kernel.

Why a VM at all: this machine's kernel has no modules and no device-mapper, so the
disk-encryption control (LUKS/dm-crypt: format, open, mount, ``lsblk`` showing
``crypt``) cannot be proven in a namespace host. Debian's cloud kernel inside
``qemu -accel tcg`` can (KVM does not boot stock guests on this machine).

Shape of it:

* ``ensure_vm_image`` builds a bookworm root filesystem once with mmdebstrap, turns the
  directory into a raw ext4 image with ``mkfs.ext4 -d`` (no loop device, no mount) and
  keeps the kernel and initrd next to it, in a cache directory keyed by the recipe.
  The image carries no identity: no ssh host keys, an empty machine-id.
* ``start_vm`` gives each VM a copy-on-write qcow2 overlay on that base, a blank data
  disk (``/dev/vdb``) and a small read-only *seed* disk (``/dev/vdc``): a plain tar
  archive written on the controller. A oneshot unit in the image extracts it over ``/``
  early in boot, before networkd and sshd. It carries root's authorized_keys, the
  hostname, the machine-id, the static address and an ed25519 host key generated here,
  so the caller gets the host's public key without trusting it on first use.
  The machine-id and hostname also go on the kernel command line, because systemd reads
  them before any unit runs.
* The NIC is a tap device in the root namespace, enslaved to the lab's existing bridge.
  No NAT, no forwarding, no default route: the guest reaches the bridge and nothing else.
* ``stop_vm`` kills only the recorded qemu PID after checking its command line, removes
  the tap and the VM's files; ``find_vm_leftovers``/``cleanup_vms`` let ``lab down``
  clear what a crashed run left behind.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from baomi.lab import image as labimage
from baomi.lab import procs
from baomi.lab.errors import LabError
from baomi.lab.hosts import wait_ssh
from baomi.lab.state import require_root

# Bump when the build steps below change in a way the package list does not show.
RECIPE_VERSION = 3

VM_PACKAGES: tuple[str, ...] = tuple(
    sorted(
        {
            "linux-image-cloud-amd64",
            "initramfs-tools",
            "systemd",
            "systemd-sysv",
            "udev",
            "openssh-server",
            "openssh-sftp-server",  # pyinfra uploads files over SFTP
            "sudo",
            "python3",
            # Agent and collector deploys make venvs from shipped wheels (ensurepip lives here).
            "python3-venv",
            "cryptsetup",
            "cryptsetup-bin",
            "e2fsprogs",
            "util-linux",
            "iproute2",
            "procps",
            "kmod",
            "dmsetup",
            # What the rest of the baseline needs on vm1 (a server; see lab/image.py):
            "nftables",  # R-NET
            "auditd",  # R-LOG: a real kernel, so the rules really load here
            "libpam-pwquality",  # R-PWD
            "cracklib-runtime",  # R-PWD: pam_pwquality's dictionary (a Recommends)
            "usbguard",  # R-USB/R-DEV (no USB bus in the VM: rules only)
            "restic",  # R-BAK
            # Controls III: on-access scanning (fanotify) and kernel settings need a real kernel.
            "clamav",  # R-SEC
            "clamav-daemon",  # R-SEC: clamd + clamonacc
            "rsyslog",  # R-LOG: logs off the host
            "rsyslog-gnutls",
            "fail2ban",  # R-SEC: SSH guessing
        }
    )
)

ROOTFS_SIZE_MB = 3072  # sparse; the per-VM overlay only stores what a guest writes
SEED_SERIAL = "baomi-seed"
DATA_SERIAL = "baomi-data"
DATA_DISK_DEVICE = "/dev/vdb"  # second virtio-blk device, see qemu_command's ordering
NAME_MARKER = "baomi-vm-"  # qemu's -name guest=baomi-vm-NAME: how stop_vm knows its qemu
TAP_PREFIX = "bmv"
STATE_FILE = "vm.json"

# Everything start_vm writes into state_dir/NAME; stop_vm removes exactly these.
_VM_FILES = frozenset({
    STATE_FILE, STATE_FILE + ".tmp", "console.log", "qemu.pid", "seed.tar", "root.qcow2",
    "data.qcow2", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# Files baked into the image. The seed unit runs before networkd and sshd; it waits for
# the seed disk by its virtio serial (udev's by-id link) rather than trusting /dev/vdc.
_SEED_SCRIPT = f"""#!/bin/sh
# baomi lab: apply this VM's seed disk (a tar archive written by the controller).
set -eu
dev=/dev/disk/by-id/virtio-{SEED_SERIAL}
i=0
while [ ! -e "$dev" ]; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo "baomi-seed: $dev did not appear" >&2; exit 1; fi
  sleep 0.1
done
tar -xpf "$dev" -C /
echo "baomi-seed: applied"
"""

_SEED_UNIT = """[Unit]
Description=baomi lab: apply the per-VM seed (keys, address, hostname)
DefaultDependencies=no
After=systemd-remount-fs.service systemd-udevd.service
Before=systemd-networkd.service ssh.service sysinit.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/baomi-seed
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""

_SSHD_CONF = """# baomi lab VM: one host key, supplied per VM by the seed disk; keys only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""

_INITRAMFS_CONF = "# baomi lab VM: a small initrd boots faster under emulation\nMODULES=list\n"
_INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\n"

# mmdebstrap hooks, run by its shell with $1 = the root directory.
_SETUP_HOOKS: tuple[str, ...] = (
    'mkdir -p "$1"/etc/initramfs-tools/conf.d "$1"/usr/share/initramfs-tools/modules.d',
    f"printf '%s' '{_INITRAMFS_CONF}' > \"$1\"/etc/initramfs-tools/conf.d/baomi-lab.conf",
    f"printf '%s' '{_INITRAMFS_MODULES}'"
    ' > "$1"/usr/share/initramfs-tools/modules.d/baomi-lab',
)
_CUSTOMIZE_HOOKS: tuple[str, ...] = (
    'rm -f "$1"/etc/ssh/ssh_host_*',
    ': > "$1"/etc/machine-id && rm -f "$1"/var/lib/dbus/machine-id',
    'echo "/dev/vda / ext4 rw,errors=remount-ro 0 0" > "$1"/etc/fstab',
    'printf "127.0.0.1 localhost\\n::1 localhost\\n" > "$1"/etc/hosts',
    'chroot "$1" systemctl enable systemd-networkd.service ssh.service',
    # Masked: boot-time work that costs seconds under emulation and nothing to the lab.
    'chroot "$1" systemctl mask systemd-networkd-wait-online.service systemd-firstboot.service'
    " apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer"
    " dpkg-db-backup.timer getty@tty1.service e2scrub_reap.service getty-static.service"
    # usbguard's D-Bus bridge (baomi manages usbguard.service, not this) costs ~1 s of boot.
    " usbguard-dbus.service",
    'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages',
)


class VmError(LabError):
    """A VM could not be built, started or stopped; the message says what and where."""


@dataclass(frozen=True)
class VmImage:
    """A cached, identity-free guest: kernel, initrd and a raw ext4 root image."""

    kernel: Path
    initrd: Path
    rootfs: Path
    key: str


@dataclass(frozen=True)
class VmInfo:
    """What a caller needs to reach a running VM and to trust its host key."""

    name: str
    pid: int
    address: str
    host_key: str
    data_disk: str
    boot_seconds: float
    console_log: Path
    tap: str
    mac: str


# ---------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], what: str, *, timeout: float = 600) -> str:
    """Run a command; on failure raise a one-line VmError with its last stderr line."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise VmError(f"{what}: {argv[0]} is not installed (run scripts/setup)") from exc
    except subprocess.TimeoutExpired as exc:
        raise VmError(f"{what}: {argv[0]} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        last = lines[-1] if lines else "no output"
        raise VmError(f"{what}: {' '.join(argv[:3])} … exited {proc.returncode}: {last}")
    return proc.stdout


# ---------------------------------------------------------------------------- image


def vm_cache_key(
    packages: Sequence[str] = VM_PACKAGES, suite: str = labimage.SUITE,
    variant: str = labimage.VARIANT,
) -> str:
    """A short digest of the recipe: a new package list (or recipe) means a new build."""
    return labimage.recipe_key({"kind": "vm", "suite": suite, "variant": variant,
                                "packages": sorted(set(packages)), "recipe": RECIPE_VERSION})


def mmdebstrap_command(root: Path, packages: Sequence[str] = VM_PACKAGES) -> list[str]:
    """The mmdebstrap call that builds the guest's root directory (pure, for tests)."""
    return labimage.mmdebstrap_command(root, packages, options=["--mode=root"],
                                       setup_hooks=_SETUP_HOOKS,
                                       customize_hooks=_CUSTOMIZE_HOOKS)


def _image_paths(cache_dir: Path, key: str) -> VmImage:
    base = cache_dir / f"vm-{key}"
    return VmImage(
        kernel=base / "vmlinuz", initrd=base / "initrd.img", rootfs=base / "rootfs.raw", key=key
    )


def _install_guest_files(root: Path) -> None:
    """Write the seed unit, its script and the sshd drop-in into the built root."""
    script = root / "usr/local/sbin/baomi-seed"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_SEED_SCRIPT)
    script.chmod(0o755)
    unit = root / "etc/systemd/system/baomi-seed.service"
    unit.write_text(_SEED_UNIT)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "baomi-seed.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/baomi-seed.service")
    conf = root / "etc/ssh/sshd_config.d/baomi-lab.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(_SSHD_CONF)


def ensure_vm_image(cache_dir: Path, packages: Sequence[str] = VM_PACKAGES) -> VmImage:
    """Return the cached guest image for this recipe, building it first if missing.

    The build takes about a minute; the image is reused until the package list or
    RECIPE_VERSION changes. A ``complete`` marker written last means a half-built
    image (crash, Ctrl-C) is never used.
    """
    key = vm_cache_key(packages)
    image = _image_paths(cache_dir, key)
    final = image.rootfs.parent
    marker = final / "complete"
    if marker.exists():
        return image
    require_root("building the VM image", "mmdebstrap")
    labimage.require_tools("building the VM image", "mmdebstrap", "mkfs.ext4")
    with labimage.file_lock(cache_dir / "vm-image.lock"):
        if marker.exists():  # another process built it while we waited
            return image
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"vm-{key}.build-", dir=cache_dir))
        try:
            root = work / "root"
            labimage.run_mmdebstrap(mmdebstrap_command(root, packages), "building the VM image")
            _install_guest_files(root)
            out = work / "image"
            out.mkdir()
            kernels = sorted((root / "boot").glob("vmlinuz-*"))
            initrds = sorted((root / "boot").glob("initrd.img-*"))
            if not kernels or not initrds:
                raise VmError(f"building the VM image: no kernel/initrd in {root / 'boot'}")
            shutil.copyfile(kernels[-1], out / "vmlinuz")
            shutil.copyfile(initrds[-1], out / "initrd.img")
            _run(
                ["mkfs.ext4", "-q", "-F", "-L", "baomi-root", "-d", str(root),
                 str(out / "rootfs.raw"), f"{ROOTFS_SIZE_MB}M"],
                "building the VM image (mkfs.ext4 -d)",
            )
            (out / "rootfs.raw").chmod(0o444)  # the shared base: overlays only read it
            (out / "recipe.json").write_text(
                json.dumps({"key": key, "packages": sorted(set(packages)),
                            "recipe": RECIPE_VERSION, "built": time.time()}, indent=1)
            )
            if final.exists():
                shutil.rmtree(final)
            out.rename(final)
            marker.write_text(key + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return image


# ---------------------------------------------------------------------------- per-VM config


def tap_name(name: str) -> str:
    """A tap name within the kernel's 15 characters, readable when the VM name is short."""
    candidate = f"{TAP_PREFIX}-{name}"
    if len(candidate) <= 15:
        return candidate
    return TAP_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:10]


def mac_address(name: str, address: str) -> str:
    """A stable, locally administered MAC (qemu's 52:54:00 prefix) for this VM."""
    digest = hashlib.sha256(f"{name}|{address}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def network_unit(mac: str, address: str, prefixlen: int) -> str:
    """systemd-networkd config: the static address only, no gateway, no IPv6 autoconf."""
    return (
        "[Match]\n"
        f"MACAddress={mac}\n\n"
        "[Link]\nRequiredForOnline=no\n\n"
        "[Network]\n"
        f"Address={address}/{prefixlen}\n"
        "DHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n"
    )


def seed_archive(
    *,
    hostname: str,
    machine_id: str,
    authorized_key: str,
    host_key_private: bytes,
    host_key_public: str,
    network: str,
    etc_hosts: str | None = None,
) -> bytes:
    """The seed disk's content: a tar the guest extracts over / (owners and modes set here).

    Only files and the one directory whose mode matters (/root/.ssh) are included, so
    extracting does not change the modes of /etc or /root.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(path: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            info.uname = info.gname = "root"
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))

        ssh_dir = tarfile.TarInfo("root/.ssh")
        ssh_dir.type, ssh_dir.mode, ssh_dir.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(ssh_dir)
        add("root/.ssh/authorized_keys", authorized_key.strip().encode() + b"\n", 0o600)
        add("etc/hostname", hostname.encode() + b"\n", 0o644)
        add("etc/machine-id", machine_id.encode() + b"\n", 0o444)
        add("etc/ssh/ssh_host_ed25519_key", host_key_private, 0o600)
        add("etc/ssh/ssh_host_ed25519_key.pub", host_key_public.strip().encode() + b"\n", 0o644)
        add("etc/systemd/network/10-baomi-lab.network", network.encode(), 0o644)
        if etc_hosts is not None:  # the lab's other hosts by name (bak1 for R-BAK's SFTP)
            add("etc/hosts", etc_hosts.encode(), 0o644)
    data = buf.getvalue()
    return data + b"\0" * (-len(data) % 512)


def kernel_append(name: str, machine_id: str) -> str:
    """Guest kernel command line: root on vda, serial console, identity for early systemd."""
    return " ".join(
        [
            "root=/dev/vda",
            "rw",
            "console=ttyS0",
            "fsck.mode=skip",
            "panic=-1",  # with -no-reboot a kernel panic ends qemu instead of hanging
            f"systemd.machine_id={machine_id}",
            f"systemd.hostname={name}",
            "systemd.firstboot=no",
            "net.ifnames=0",
        ]
    )


def qemu_command(
    image: VmImage,
    *,
    name: str,
    vm_dir: Path,
    tap: str,
    mac: str,
    machine_id: str,
    memory_mb: int,
    smp: int = 2,
) -> list[str]:
    """The qemu argv. Disk order is fixed: vda root overlay, vdb data, vdc seed."""
    return [
        "qemu-system-x86_64",
        "-name", f"guest={NAME_MARKER}{name}",
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-smp", str(smp),
        "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={vm_dir / 'console.log'}",
        "-serial", "chardev:console",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", kernel_append(name, machine_id),
        "-drive", f"file={vm_dir / 'root.qcow2'},if=none,id=root,format=qcow2,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root,serial=baomi-root",
        "-drive", f"file={vm_dir / 'data.qcow2'},if=none,id=data,format=qcow2,cache=unsafe",
        "-device", f"virtio-blk-pci,drive=data,serial={DATA_SERIAL}",
        "-drive", f"file={vm_dir / 'seed.tar'},if=none,id=seed,format=raw,readonly=on",
        "-device", f"virtio-blk-pci,drive=seed,serial={SEED_SERIAL}",
        "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-device", "virtio-rng-pci",
        "-pidfile", str(vm_dir / "qemu.pid"),
        "-daemonize",
    ]


def qemu_vm_name(cmdline: bytes) -> str | None:
    """The VM name in a /proc/PID/cmdline if it is a qemu that start_vm launched, else None."""
    argv = [a.decode("utf-8", "replace") for a in cmdline.split(b"\0") if a]
    if not argv or not os.path.basename(argv[0]).startswith("qemu-system"):
        return None
    for flag, value in itertools.pairwise(argv):
        guest = value.split(",")[0]
        if flag == "-name" and guest.startswith(f"guest={NAME_MARKER}"):
            return guest.removeprefix(f"guest={NAME_MARKER}") or None
    return None


def is_our_qemu(cmdline: bytes, name: str) -> bool:
    """Whether a /proc/PID/cmdline is the qemu start_vm launched for this VM name.

    Checked before any kill so that a recycled PID never costs an unrelated process.
    """
    return qemu_vm_name(cmdline) == name


def _is_tap(dev: str) -> bool:
    return Path(f"/sys/class/net/{dev}/tun_flags").exists()


# ---------------------------------------------------------------------------- start/stop


def start_vm(
    image: VmImage,
    *,
    name: str,
    state_dir: Path,
    bridge: str,
    address: str,
    prefixlen: int,
    authorized_key: str,
    tap: str | None = None,
    etc_hosts: str | None = None,
    memory_mb: int = 1024,
    data_disk_mb: int = 512,
    smp: int = 2,
    timeout: float = 180,
) -> VmInfo:
    """Boot one VM on ``bridge`` at ``address`` and return once its sshd answers.

    On any failure everything started so far (qemu, tap, disks) is removed again and
    the VM's console log is kept in ``state_dir/name/`` for a look.
    """
    require_root("starting a VM", "tap devices")
    if not _NAME_RE.match(name):
        raise VmError(f"VM name {name!r}: use lowercase letters, digits and '-' (max 63)")
    if not Path(f"/sys/class/net/{bridge}/bridge").is_dir():
        raise VmError(f"VM {name}: bridge {bridge!r} does not exist (start the lab network first)")
    if not image.rootfs.exists():
        raise VmError(f"VM {name}: image {image.rootfs} is missing (ensure_vm_image first)")
    state_dir = state_dir.resolve()  # absolute paths in qemu's argv: leftovers are findable
    tap = tap or tap_name(name)
    if len(tap) > 15:
        raise VmError(f"VM {name}: tap name {tap!r} is longer than 15 characters")
    vm_dir = state_dir / name
    old = _load_state(vm_dir)
    old_pid = int(str((old or {}).get("pid") or 0))
    if old_pid > 0 and is_our_qemu(procs.read_cmdline(old_pid), name):
        raise VmError(f"VM {name} is already running (pid {old_pid}); stop it first")
    stop_vm(state_dir, name)  # clear a dead run's files and recorded tap
    if Path(f"/sys/class/net/{tap}").exists():
        raise VmError(f"VM {name}: network device {tap} already exists (used by another VM?)")
    vm_dir.mkdir(parents=True, mode=0o700)  # seed.tar holds the VM's private host key
    mac = mac_address(name, address)
    machine_id = uuid.uuid4().hex
    state: dict[str, object] = {"name": name, "tap": tap, "mac": mac, "address": address,
                                "pid": 0, "bridge": bridge}
    _save_state(vm_dir, state)  # before the tap exists, so a crash leaves a record
    console = vm_dir / "console.log"
    try:
        key_path = vm_dir / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
              "-f", str(key_path)], f"VM {name}: generating its host key")
        host_key = " ".join(key_path.with_suffix(".pub").read_text().split()[:2])
        seed = seed_archive(
            hostname=name,
            machine_id=machine_id,
            authorized_key=authorized_key,
            host_key_private=key_path.read_bytes(),
            host_key_public=host_key,
            network=network_unit(mac, address, prefixlen),
            etc_hosts=etc_hosts,
        )
        (vm_dir / "seed.tar").write_bytes(seed)
        key_path.unlink()  # the guest has it; the controller only needs the public half
        fmt = "raw" if image.rootfs.suffix == ".raw" else "qcow2"
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.rootfs.resolve()),
              "-F", fmt, str(vm_dir / "root.qcow2")], f"VM {name}: creating its root overlay")
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(vm_dir / "data.qcow2"),
              f"{data_disk_mb}M"], f"VM {name}: creating its data disk")
        _run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], f"VM {name}: creating tap {tap}")
        _run(["ip", "link", "set", tap, "master", bridge], f"VM {name}: attaching {tap}")
        _run(["ip", "link", "set", tap, "up"], f"VM {name}: bringing {tap} up")
        argv = qemu_command(image, name=name, vm_dir=vm_dir, tap=tap, mac=mac,
                            machine_id=machine_id, memory_mb=memory_mb, smp=smp)
        state["argv"] = argv
        started = time.monotonic()
        _run(argv, f"VM {name}: starting qemu", timeout=60)
        pid = int((vm_dir / "qemu.pid").read_text().strip())
        state["pid"] = pid
        _save_state(vm_dir, state)
        wait_ssh(address, pid, f"VM {name}", console, timeout - (time.monotonic() - started),
                 probe_timeout=5.0, error=VmError)
        boot = time.monotonic() - started
    except BaseException:
        _teardown(vm_dir, state, keep_log=True)
        raise
    info = VmInfo(name=name, pid=pid, address=address, host_key=host_key,
                  data_disk=DATA_DISK_DEVICE, boot_seconds=round(boot, 2),
                  console_log=console, tap=tap, mac=mac)
    state["info"] = {k: str(v) for k, v in asdict(info).items()}
    _save_state(vm_dir, state)
    return info


def _save_state(vm_dir: Path, state: dict[str, object]) -> None:
    tmp = vm_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(vm_dir / STATE_FILE)


def _load_state(vm_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((vm_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _kill_qemu(pid: int, name: str) -> None:
    """SIGTERM then SIGKILL one PID, only if it still is our qemu for ``name``."""
    if pid <= 0 or not is_our_qemu(procs.read_cmdline(pid), name):
        return
    procs.kill(pid, signal.SIGTERM)
    procs.wait_gone([pid], 10)
    if procs.pid_alive(pid) and is_our_qemu(procs.read_cmdline(pid), name):
        procs.kill(pid)
        procs.wait_gone([pid], 5)
    if procs.pid_alive(pid):
        raise VmError(f"VM {name}: qemu pid {pid} does not exit")
    # A daemonized qemu is reaped by PID 1; give it a moment so callers see it gone.
    deadline = time.monotonic() + 3
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _teardown(vm_dir: Path, state: dict[str, object], *, keep_log: bool) -> None:
    name = str(state.get("name") or vm_dir.name)
    pid = int(str(state.get("pid") or 0))
    if pid <= 0:
        with suppress(OSError, ValueError):
            pid = int((vm_dir / "qemu.pid").read_text().strip())
    _kill_qemu(pid, name)
    tap = str(state.get("tap") or "")
    if tap and _is_tap(tap):
        _run(["ip", "link", "del", tap], f"VM {name}: removing tap {tap}")
    if not vm_dir.exists():
        return
    # Only files start_vm creates are removed: the lab may keep other hosts' directories
    # (or its own notes) next to or inside ours, and a wrong name must not cost them.
    keep = {"console.log", STATE_FILE} if keep_log else set()
    for entry in _VM_FILES - keep:
        (vm_dir / entry).unlink(missing_ok=True)
    if keep_log:
        state["pid"] = 0
        _save_state(vm_dir, state)
    else:
        with suppress(OSError):  # not empty: someone else's files stay
            vm_dir.rmdir()


def stop_vm(state_dir: Path, name: str) -> None:
    """Stop a VM and remove its tap and files; a no-op if there is nothing left."""
    vm_dir = state_dir.resolve() / name
    state = _load_state(vm_dir) or {"name": name}
    if "tap" not in state:
        state["tap"] = tap_name(name)  # the default; an unrecorded custom tap is unknowable
    _teardown(vm_dir, state, keep_log=False)


def find_vm_leftovers(state_dir: Path) -> list[str]:
    """Names of VMs with anything left under ``state_dir`` (files, a live qemu, a tap).

    Includes qemu processes of ours whose disks live under ``state_dir`` even when the
    VM's directory is gone, so ``lab down`` can end them by PID.
    """
    names: set[str] = set()
    if state_dir.is_dir():
        names.update(p.parent.name for p in state_dir.glob(f"*/{STATE_FILE}"))
    for pid, name in _our_qemu_processes(state_dir):
        del pid
        names.add(name)
    return sorted(names)


def _our_qemu_processes(state_dir: Path) -> list[tuple[int, str]]:
    """(pid, vm name) of every qemu started by start_vm with its files under state_dir."""
    found: list[tuple[int, str]] = []
    prefix = str(state_dir.resolve()) + "/"
    for pid in procs.all_pids():
        raw = procs.read_cmdline(pid)
        name = qemu_vm_name(raw)
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        if name and any(prefix in a for a in argv):
            found.append((pid, name))
    return found


def cleanup_vms(state_dir: Path) -> list[str]:
    """Stop every VM with leftovers under ``state_dir``; return their names."""
    names = find_vm_leftovers(state_dir)
    for pid, name in _our_qemu_processes(state_dir):
        _kill_qemu(pid, name)
    for name in names:
        stop_vm(state_dir, name)
    return names
