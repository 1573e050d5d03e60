"""The processes a lab starts: alive or not, ending them, and finding the ones a run left.

One reading of /proc for every flavour (plain, systemd, VM) and for `lab down`, so they
agree on what "alive" means (a zombie awaiting its reaper is gone) and all kill the same
way: SIGKILL, then wait until the kernel has really ended the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from baomi.lab import net


def pid_alive(pid: int | None) -> bool:
    """Whether PID runs; a zombie (already dead, not yet reaped) counts as gone."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill(pid: int | None, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send SIG to PID if it still runs; a process that ends meanwhile is no error."""
    if pid and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait up to TIMEOUT seconds for every PID to end; whether they all did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(pid_alive(p) for p in pids)


def kill_all(pids: list[int]) -> list[int]:
    """SIGKILL every PID, wait (5 s at most) until they are gone; return those signalled."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(pid)
    wait_gone(killed, 5)
    return killed


def read_cmdline(pid: int) -> bytes:
    """PID's /proc cmdline (NUL-separated argv); empty if the process is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def kill_netns_processes(ns: str) -> list[int]:
    """SIGKILL every process living in the lab netns NS (a crashed host's leftovers)."""
    ino = net.netns_inode(ns)
    if ino is None:
        return []
    return kill_all([pid for pid in all_pids() if _netns_inode(pid) == ino])


def _ancestors() -> set[int]:
    """This process and its parents: the sweep must never end the command running it."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


# The programs a lab starts outside a host's netns (comm names, 15 characters at most).
_OURS = {"unshare", "systemd-nspawn", "ssh", "sshd", "bash", "sh", "ip", "qemu-system-x86"}


def _started_for(pid: int, needle: bytes) -> bool:
    """Whether PID is one of the lab's programs and its command line names NEEDLE."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return comm in _OURS and needle in cmdline.replace(b"\0", b" ") + b"/"


def kill_state_dir_processes(state_dir: Path) -> list[int]:
    """Processes the lab started that live outside its netns (nspawn, ssh masters, qemu)."""
    needle = str(state_dir).encode() + b"/"
    mine = _ancestors()
    return kill_all([pid for pid in all_pids() if pid not in mine and _started_for(pid, needle)])
