"""The shared lab's hosts are real, separate machines as far as deploys and checks go."""

from __future__ import annotations

import pwd
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from baomi.lab.testing import LabHandle

DATA = Path(__file__).parent / "data"
VENV_BIN = Path(sys.executable).parent


def _ok(lab: LabHandle, host: str, cmd: str) -> str:
    proc = lab.ssh(host, cmd)
    assert proc.returncode == 0, f"{host}: {cmd!r} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_lab_has_the_requested_hosts(lab: LabHandle) -> None:
    assert lab.group("servers") == ["srv1", "srv2", "srv3"]
    assert lab.group("workstations") == ["ws1"]
    assert lab.group("backup") == ["bak1"]
    assert lab.flavour("systemd") == ["srv3"]
    assert len({h.address for h in lab.hosts}) == len(lab.hosts)


def test_each_host_answers_ssh_with_its_own_pinned_key(lab: LabHandle) -> None:
    keys = {h.host_key for h in lab.hosts}
    assert len(keys) == len(lab.hosts), "host keys must differ between hosts"
    for h in lab.hosts:
        assert _ok(lab, h.name, "hostname").strip() == h.name
        # The key the server presents is the one recorded and pinned.
        served = _ok(lab, h.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
        assert " ".join(served) == h.host_key


def test_wrong_known_hosts_is_refused(lab: LabHandle, tmp_path: Path) -> None:
    a, b = lab.hosts[0], lab.hosts[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{a.name},{a.address} {b.host_key}\n")
    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", f"UserKnownHostsFile={wrong}",
         "-o", "ControlMaster=no", "-o", "ControlPath=none", a.name, "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode != 0
    assert "host key" in proc.stderr.lower()


def test_a_user_exists_only_on_the_host_that_made_it(lab: LabHandle) -> None:
    user = "lab" + secrets.token_hex(3)
    first, *others = lab.names
    _ok(lab, first, f"useradd -m {user}")
    try:
        assert user in _ok(lab, first, f"getent passwd {user}")
        for other in others:
            assert lab.ssh(other, f"getent passwd {user}").returncode == 2, other
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
        assert not Path(f"/home/{user}").exists()
    finally:
        lab.ssh(first, f"userdel -r {user}")


def test_systemd_host_boots_systemd(lab: LabHandle) -> None:
    (name,) = lab.flavour("systemd")
    state = lab.ssh(name, "systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")
    assert _ok(lab, name, "systemctl is-active ssh.service").strip() == "active"
    assert _ok(lab, name, "cat /proc/1/comm").strip() == "systemd"


def test_every_host_makes_a_venv_without_a_network(lab: LabHandle) -> None:
    """Agent and collector deploys install shipped wheels into a venv: ensurepip must work."""
    for name in lab.names:
        out = _ok(lab, name, "python3 -m venv /tmp/baomi-venv && /tmp/baomi-venv/bin/python -c "
                             "'import sys; print(sys.prefix)' && /tmp/baomi-venv/bin/pip --version"
                             "; rc=$?; rm -rf /tmp/baomi-venv; exit $rc")
        assert out.splitlines()[0] == "/tmp/baomi-venv", (name, out)
        assert out.splitlines()[1].startswith("pip "), (name, out)


def test_plain_hosts_do_not_see_the_machine(lab: LabHandle) -> None:
    for name in lab.flavour("plain"):
        # Own pid namespace (sshd is PID 1), no default route, no real disks in /dev.
        assert "sshd" in _ok(lab, name, "cat /proc/1/cmdline")
        assert "default" not in _ok(lab, name, "ip route")
        assert _ok(lab, name, "ls /dev | grep -E '^(sd|vd|nvme)' || true").strip() == ""


def test_backup_host_serves_sftp(lab: LabHandle) -> None:
    (bak,) = lab.group("backup")
    proc = subprocess.run(
        ["sftp", "-F", str(lab.ssh_config), "-b", "-", bak],
        input="mkdir /srv/labrepo\nls /srv\n", capture_output=True, text=True, timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "labrepo" in proc.stdout


def test_pyinfra_deploy_then_testinfra_sees_it(lab: LabHandle) -> None:
    deploy = subprocess.run(
        [str(VENV_BIN / "pyinfra"), "-y", str(lab.inventory), str(DATA / "deploy_file.py")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    for name in lab.names:
        assert _ok(lab, name, "cat /etc/baomi-lab-marker") == "deployed-by-pyinfra\n"
    hosts = ",".join(f"ssh://{n}" for n in lab.names)
    check = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--hosts={hosts}",
         f"--ssh-config={lab.ssh_config}", str(DATA / "testinfra_marker.py")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert check.returncode == 0, check.stdout[-3000:]
    assert f"{len(lab.names)} passed" in check.stdout
