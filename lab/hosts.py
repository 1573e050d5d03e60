"""Starting and stopping one lab host: an overlay root in its own namespaces, running sshd.

`plain` hosts run sshd as PID 1 of a fresh pid namespace (fast, ~1 s); `systemd` hosts
boot the image's systemd under systemd-nspawn (units, timers and `systemctl` work).
Both mount their overlay root inside their own mount namespace, so nothing of a host
is visible in this machine's mount table and it all goes away with the host.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from baomi.lab import procs
from baomi.lab.errors import LabError

# A minimal, predictable environment for everything run inside a host.
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class HostLayout:
    """A host's directories: overlay upper/work over the shared lower, and its mount point."""

    lower: Path
    host_dir: Path

    @property
    def upper(self) -> Path:
        return self.host_dir / "upper"

    @property
    def work(self) -> Path:
        return self.host_dir / "work"

    @property
    def root(self) -> Path:
        return self.host_dir / "root"

    @property
    def log(self) -> Path:
        return self.host_dir / "console.log"

    def overlay_options(self) -> str:
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"


def prepare_upper(layout: HostLayout, hostname: str, authorized_key: str,
                  etc_hosts: str) -> list[str]:
    """Give the host its own identity before it starts, by writing into its upper dir.

    Fresh host keys (ssh-keygen -A), a new machine-id, hostname, /etc/hosts and root's
    authorized key. Writing the upper dir while nothing is mounted is safe for overlayfs.
    Returns the public host key lines (ed25519 first).
    """
    for d in (layout.upper, layout.work, layout.root):
        d.mkdir(parents=True, exist_ok=True)
    up = layout.upper
    (up / "etc/ssh").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["ssh-keygen", "-A", "-f", str(up)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise LabError(f"{hostname}: ssh-keygen -A failed: {proc.stderr.strip()}")
    (up / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    (up / "etc/hostname").write_text(hostname + "\n")
    (up / "etc/hosts").write_text(etc_hosts)
    ssh_dir = up / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(ssh_dir, 0o700)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_key.strip() + "\n")
    os.chmod(auth, 0o600)
    keys = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        pub = up / f"etc/ssh/ssh_host_{kind}_key.pub"
        if pub.exists():
            fields = pub.read_text().split()
            keys.append(f"{fields[0]} {fields[1]}")
    if not keys or not keys[0].startswith("ssh-ed25519 "):
        raise LabError(f"{hostname}: no ed25519 host key was generated")
    return keys


# --- plain flavour ----------------------------------------------------------------------

_PLAIN_SCRIPT = """\
set -e
R={root}
mount -t overlay overlay -o {opts} "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t tmpfs -o mode=755,nosuid,size=16m tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
hostname {hostname}
exec chroot "$R" /usr/sbin/sshd -D -e
"""


def _child_pid(parent: int, timeout: float = 5.0) -> int:
    """The single child of PARENT (unshare --fork's child becomes sshd)."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{parent}/task/{parent}/children")
    while time.monotonic() < deadline:
        try:
            kids = path.read_text().split()
        except OSError as exc:
            raise LabError(f"host process {parent} exited during start") from exc
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise LabError(f"host process {parent} started no child")


def start_plain(layout: HostLayout, hostname: str, netns: str) -> tuple[int, int]:
    """Start a plain host; returns (sshd pid, unshare pid).

    `unshare --fork` ignores SIGTERM, so the host is stopped by killing its sshd (PID 1
    of the host's pid namespace, which takes every process of the host with it).
    """
    script = _PLAIN_SCRIPT.format(
        root=shlex.quote(str(layout.root)), opts=shlex.quote(layout.overlay_options()),
        hostname=shlex.quote(hostname),
    )
    cmd = ["ip", "netns", "exec", netns, "unshare", "--mount", "--pid", "--uts", "--ipc",
           "--fork", "--kill-child", "--propagation", "private", "bash", "-c", script]
    with layout.log.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=HOST_ENV, start_new_session=True)
    return _child_pid(proc.pid), proc.pid


# --- systemd flavour --------------------------------------------------------------------


def ensure_nspawn(cache_dir: Path) -> Path:
    """A private systemd-nspawn, unpacked from Debian's systemd-container package.

    Installing the package would upgrade this machine's systemd and edit nsswitch.conf;
    unpacking it into the cache gives a working binary and touches nothing.
    """
    dest = cache_dir / "systemd-container"
    binary = dest / "usr/bin/systemd-nspawn"
    if binary.exists():
        return binary
    dl = cache_dir / "download"
    dl.mkdir(parents=True, exist_ok=True)
    os.chmod(dl, 0o755)  # noqa: S103 a lab folder of public packages
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "systemd"],
                               capture_output=True, text=True, check=False).stdout.strip()
    attempts = ([f"systemd-container={installed}"] if installed else []) + ["systemd-container"]
    for spec in attempts:
        for old in dl.glob("systemd-container_*.deb"):
            old.unlink()
        proc = subprocess.run(["apt-get", "download", "-q", spec], cwd=dl, capture_output=True,
                              text=True, check=False)
        debs = sorted(dl.glob("systemd-container_*.deb"))
        if proc.returncode == 0 and debs:
            tmp = dest.with_name(dest.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp)], check=True)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            return binary
    raise LabError("cannot fetch systemd-container with apt-get download (package mirror?)")


CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_GROUP = "baomi-lab"


def cgroup_hierarchies() -> list[Path]:
    """Where systemd keeps its cgroups here: name=systemd (v1) and/or the unified tree."""
    if (CGROUP_ROOT / "cgroup.procs").exists():  # pure cgroup v2
        return [CGROUP_ROOT]
    return [CGROUP_ROOT / h for h in ("systemd", "unified") if (CGROUP_ROOT / h).is_dir()]


def host_cgroups(unit: str) -> list[Path]:
    """A systemd host's own cgroup per hierarchy (UNIT is "LAB-HOST")."""
    return [h / CGROUP_GROUP / unit for h in cgroup_hierarchies()]


def cgroup_pids(top: Path) -> list[int]:
    """Every process in a cgroup and its children (cgroup.procs of each level)."""
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(top):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()]
    return pids


def remove_cgroup_tree(top: Path, timeout: float = 15.0) -> bool:
    """rmdir a lab host's cgroup and its children, deepest first; whether it is gone.

    cgroupfs only removes an empty group, and a host's processes may still be ending (a
    killed container's services, zombies not yet reaped by a killed nspawn's reaper):
    what is still inside is SIGKILLed (only the lab ever puts a process in its group)
    and the removal retried until TIMEOUT.
    """
    deadline = time.monotonic() + timeout
    while top.is_dir():
        pids = cgroup_pids(top)
        procs.kill_all([p for p in pids if p != os.getpid() and procs.pid_alive(p)])
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not top.is_dir() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return not top.is_dir()


def start_systemd(layout: HostLayout, hostname: str, netns: str, nspawn: Path) -> int:
    """Boot a systemd host in the existing netns; returns the systemd-nspawn pid.

    The overlay is mounted inside a private mount namespace made just for nspawn; eth0 is
    already configured from outside (the netns is shared), and the image leaves
    systemd-networkd off, so nothing inside reconfigures it. nspawn is first moved into
    a cgroup of its own: with --keep-unit it builds the container's cgroup tree
    ("payload") under its current cgroup, which would otherwise be shared by every
    systemd host on the machine (and `systemctl stop` in one would hit the others).
    """
    cgroups = host_cgroups(netns)
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)
    join = "".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))} && " for cg in cgroups)
    script = (
        join +
        f"mount -t overlay overlay -o {shlex.quote(layout.overlay_options())} "
        f"{shlex.quote(str(layout.root))} && exec {shlex.quote(str(nspawn))} "
        f"-D {shlex.quote(str(layout.root))} -M {shlex.quote(hostname)} --boot "
        "--register=no --keep-unit --console=passive --resolv-conf=off --timezone=off "
        f"--link-journal=no --network-namespace-path=/run/netns/{shlex.quote(netns)}"
        # The host owns its network namespace: let it manage its own firewall and addresses
        # (nft, ip), as a real server would; nothing here reaches this machine's namespace.
        " --capability=CAP_NET_ADMIN"
        # fanotify as on a real host (nspawn's seccomp filter refuses it): the agent names
        # the process and user behind a change with it (agent/actors.py).
        " --system-call-filter='fanotify_init fanotify_mark'"
    )
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    with layout.log.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=HOST_ENV, start_new_session=True)
    return proc.pid


# --- common -----------------------------------------------------------------------------


def ssh_banner(address: str, timeout: float = 1.0) -> str | None:
    """The server's SSH identification line, or None if nothing answers like sshd."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line if line.startswith("SSH-") else None


def wait_ssh(address: str, pid: int, hostname: str, log: Path, timeout: float = 60.0, *,
             probe_timeout: float = 0.5, error: type[LabError] = LabError) -> None:
    """Block until sshd on ADDRESS sends its banner; fail fast if the host's PID died.

    Every flavour waits here (the VM passes a longer PROBE_TIMEOUT: under emulation its
    sshd takes seconds to answer a connection, and the VM's own ERROR type).
    """
    deadline = time.monotonic() + timeout
    while True:
        if ssh_banner(address, timeout=probe_timeout):
            return
        if not procs.pid_alive(pid):
            raise error(f"{hostname}: host exited during start; {log}: {tail(log)}")
        if time.monotonic() > deadline:
            raise error(f"{hostname}: sshd on {address} did not answer in {timeout:.0f}s; "
                        f"{log}: {tail(log)}")
        time.sleep(0.05)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours systemd writes to a console


def tail(log: Path, lines: int = 3) -> str:
    """The last LINES of a host's console log on one line (" | "), for one-line errors."""
    try:
        data = log.read_bytes()[-16384:]
    except OSError:
        return ""
    text = _ANSI.sub("", data.decode("utf-8", "replace").replace("\r", ""))
    return " | ".join(text.strip().splitlines()[-lines:])
