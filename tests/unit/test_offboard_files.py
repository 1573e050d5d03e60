"""baomi/hostside/offboard_files.py on a local tree (the lab tests run it on hosts): a planted
link is itself quarantined and its target untouched; the archive keeps odd names byte for
byte, skips links and FIFOs, and its manifest verifies with sha256sum -c."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from baomi.fixes.offboarding import FILES


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", FILES, *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_planted_link_is_quarantined_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "rootssh"
    target.mkdir()
    (target / "authorized_keys").write_text("root's key\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").symlink_to(target)
    quarantine = tmp_path / "q"
    quarantine.mkdir(mode=0o700)
    keys = f"{home}/.ssh/authorized_keys"
    assert run("keys-done", str(home), keys).returncode == 1
    moved = run("quarantine", str(os.getuid()), str(home), keys, f"{quarantine}/ssh-0-keys")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == f"{home}/.ssh: the link (to {target}) removed, its target " \
                           "untouched\n"
    assert (target / "authorized_keys").read_text() == "root's key\n"
    assert not os.path.lexists(home / ".ssh")
    assert sorted(p.name for p in quarantine.iterdir()) == ["ssh-0-keys.link"]
    assert run("keys-done", str(home), keys).returncode == 0
    # Outside the home a link is not touched: refused, named.
    outside = tmp_path / "etc-keys"
    outside.symlink_to(target)
    refused = run("quarantine", "0", str(home), f"{outside}/authorized_keys",
                  f"{quarantine}/ssh-1-keys")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"refused: {outside}: a link outside"), refused.stderr
    assert outside.is_symlink()


def test_the_archive_keeps_odd_names_and_skips_links_and_fifos(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "x\netc").mkdir(parents=True)
    (home / "x\netc" / "shadow").write_text("mine\n")
    (home / "x").write_text("x\n")
    (home / "zero").symlink_to("/dev/zero")
    os.mkfifo(home / "pipe")
    quarantine, custody = tmp_path / "q", tmp_path / "custody"
    quarantine.mkdir()
    custody.mkdir()
    archive = custody / "a.tar.gz"
    made = run("archive", str(os.getuid()), str(home), str(quarantine), "root", str(archive))
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{archive}: 2 files\n"
    top = str(home).lstrip("/")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [f"{top}/x", f"{top}/x\netc/shadow"]
        tar.extractall(tmp_path / "out", filter="data")
    check = subprocess.run(["sha256sum", "-c", f"{archive}.manifest"], cwd=tmp_path / "out",
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert oct(archive.stat().st_mode & 0o777) == "0o400"
    sums = subprocess.run(["sha256sum", "-c", f"{archive}.sha256"], cwd=custody,
                          capture_output=True, text=True, check=False)
    assert sums.returncode == 0, sums.stdout + sums.stderr
