"""`baomi lab up/status/down` from the command line, and that `down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baomi.lab import net
from baomi.lab.hosts import CGROUP_GROUP, cgroup_hierarchies
from baomi.lab.procs import pid_alive
from baomi.lab.state import LabPaths

BAOMI = str(Path(sys.executable).parent / "baomi")


def baomi(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BAOMI, "lab", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def leftovers(name: str) -> list[str]:
    """Everything of lab NAME still on the machine, in any mount namespace."""
    paths = LabPaths.for_lab(name)
    found = [f"netns {n}" for n in net.lab_netns(name)]
    found += [f"link {n}" for n in net.lab_links(name)]
    needle = str(paths.state_dir) + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            mounts = (proc / "mountinfo").read_text()
        except OSError:
            continue
        if needle in cmdline:
            found.append(f"process {proc.name}: {cmdline[:80]}")
        if needle in mounts:
            found.append(f"mount seen by process {proc.name}")
    losetup = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                             capture_output=True, text=True, check=False).stdout
    found += [f"loop {line}" for line in losetup.splitlines() if needle in line]
    for hierarchy in cgroup_hierarchies():
        found += [f"cgroup {cg}" for cg in (hierarchy / CGROUP_GROUP).glob(f"{name}-*")]
    if paths.state_dir.exists():
        found.append(f"dir {paths.state_dir}")
    return found


@pytest.fixture
def name() -> str:
    n = f"c{os.getpid() % 10_000_000}"
    yield n
    baomi("down", "--name", n)


def test_not_root_is_a_clear_error_exit_2() -> None:
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           BAOMI, "lab", "status"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "needs root" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_request_is_a_one_line_error(name: str) -> None:
    proc = baomi("up", "--name", name, "--servers", "1", "--systemd-servers", "2")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "OF the servers" in proc.stderr


def test_up_add_status_down(name: str) -> None:
    t0 = time.monotonic()
    proc = baomi("up", "--name", name, "--servers", "3", "--systemd-servers", "1")
    up_seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    print(f"lab up, 2 plain + 1 systemd: {up_seconds:.1f}s")
    st = json.loads(baomi("status", "--name", name, "--json").stdout)
    assert [h["name"] for h in st["hosts"]] == ["srv1", "srv2", "srv3"]
    assert all(h["ssh_ok"] and h["banner"].startswith("SSH-2.0") for h in st["hosts"])
    pids = {h["name"]: h["pid"] for h in st["hosts"]}

    # A running lab grows; nothing already there restarts.
    assert baomi("up", "--name", name, "--workstations", "1").returncode == 0
    assert baomi("up", "--name", name).returncode == 0  # no counts: nothing added
    st = json.loads(baomi("status", "--name", name, "--json").stdout)
    assert [h["name"] for h in st["hosts"]] == ["srv1", "srv2", "srv3", "ws1"]
    assert {h["name"]: h["pid"] for h in st["hosts"] if h["name"] != "ws1"} == pids
    assert all(h["ssh_ok"] for h in st["hosts"])
    assert st["hosts"][3]["groups"] == ["workstations"]

    # Collector hosts: col1 plain, col2 boots systemd (the collector runs as a unit there).
    proc = baomi("up", "--name", name, "--collector", "2", "--systemd-collector", "1")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(baomi("status", "--name", name, "--json").stdout)
    cols = {h["name"]: h for h in st["hosts"] if h["name"].startswith("col")}
    assert {n: (h["groups"], h["flavour"], h["ssh_ok"]) for n, h in cols.items()} == {
        "col1": (["collector"], "plain", True), "col2": (["collector"], "systemd", True)}
    inventory = runpy.run_path(st["inventory"])
    assert inventory["collector"] == ["col1", "col2"]
    assert inventory["servers"] == ["srv1", "srv2", "srv3"]

    # A loop device on a file under the lab dir (as a disk-encryption test would make).
    disk = Path(st["state_dir"]) / "hosts/srv1/upper/root/disk.img"
    disk.write_bytes(b"\0" * (4 << 20))
    loop = subprocess.run(["losetup", "-f", "--show", str(disk)], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert loop

    t0 = time.monotonic()
    proc = baomi("down", "--name", name)
    print(f"lab down: {time.monotonic() - t0:.1f}s")
    assert proc.returncode == 0, proc.stderr
    assert leftovers(name) == []
    assert baomi("down", "--name", name).returncode == 0  # idempotent
    assert json.loads(baomi("status", "--name", name, "--json").stdout)["exists"] is False


def test_down_clears_a_crashed_run_without_its_record(name: str) -> None:
    assert baomi("up", "--name", name, "--servers", "2", "--systemd-servers", "1").returncode == 0
    paths = LabPaths.for_lab(name)
    record = json.loads(paths.lab_json.read_text())
    paths.lab_json.unlink()  # the run "crashed" before it could record anything
    proc = baomi("down", "--name", name)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(name) == []
    for h in record["hosts"]:
        assert not pid_alive(h["pid"])  # a zombie awaiting its reaper does not count


def test_down_ends_what_still_runs_in_a_hosts_cgroup(name: str) -> None:
    # A container's service in a network namespace of its own (PrivateNetwork=) is in
    # neither the lab's netns nor named by its state dir: only its cgroup says whose it is.
    groups = [h / CGROUP_GROUP / f"{name}-srv9" for h in cgroup_hierarchies()]
    for cg in groups:
        cg.mkdir(parents=True)
    join = "".join(f"echo $$ > {cg / 'cgroup.procs'} && " for cg in groups)
    straggler = subprocess.Popen(["unshare", "--net", "sh", "-c", join + "exec sleep 600"],
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while str(straggler.pid) not in (groups[0] / "cgroup.procs").read_text().split():
            assert time.monotonic() < deadline, "the straggler never joined its cgroup"
            time.sleep(0.05)
        proc = baomi("down", "--name", name)
        assert proc.returncode == 0, proc.stderr
        assert straggler.wait(timeout=10) == -signal.SIGKILL
        assert leftovers(name) == []
    finally:
        if straggler.poll() is None:
            straggler.kill()
            straggler.wait()


def test_up_replaces_a_lab_whose_hosts_died(name: str) -> None:
    assert baomi("up", "--name", name, "--servers", "2").returncode == 0
    paths = LabPaths.for_lab(name)
    record = json.loads(paths.lab_json.read_text())
    os.kill(record["hosts"][0]["pid"], signal.SIGKILL)
    proc = baomi("up", "--name", name, "--servers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "clearing" in proc.stderr
    st = json.loads(baomi("status", "--name", name, "--json").stdout)
    assert [h["name"] for h in st["hosts"]] == ["srv1"]
    assert st["hosts"][0]["ssh_ok"]
