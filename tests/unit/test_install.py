"""The one validated install, run for real by sh on files in a temporary directory."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from baomi.fixes.install import install_file


def sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".baomi-"))


def test_exact_content_mode_and_no_temp_file_left(tmp_path: Path) -> None:
    target = tmp_path / "it's a \"dir\" $HOME" / "conf file"
    content = "line one\n'quoted' \"double\" $VAR `cmd` \\ 保密\n"
    result = sh(install_file(str(target), content, mode="0640"))
    assert result.returncode == 0, result.stderr
    assert target.read_text(encoding="utf-8") == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_uid == os.geteuid()
    assert leftovers(target.parent) == []


def test_a_rejected_file_never_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    target.write_text("good\n")
    script = install_file(str(target), "bad\n", validate="grep -q good {new}")
    result = sh(script)
    assert result.returncode == 1
    assert f"grep rejected {target}" in result.stderr
    assert target.read_text() == "good\n"
    assert leftovers(tmp_path) == []


def test_in_place_validation_rolls_back_and_skips_the_reload(tmp_path: Path) -> None:
    target = tmp_path / "sshd.conf"
    target.write_text("old\n")
    marker = tmp_path / "reloaded"
    validate = f"grep -qv broken {target}"
    bad = install_file(str(target), "broken\n", validate=validate, then=f"touch {marker}")
    result = sh(bad)
    assert result.returncode == 1 and "rejected" in result.stderr
    assert target.read_text() == "old\n" and not marker.exists()
    good = install_file(str(target), "fine\n", validate=validate, then=f"touch {marker}")
    assert sh(good).returncode == 0
    assert target.read_text() == "fine\n" and marker.exists()
    assert leftovers(tmp_path) == []


def test_in_place_rejection_of_a_new_file_removes_it(tmp_path: Path) -> None:
    target = tmp_path / "new.conf"
    result = sh(install_file(str(target), "x\n", validate="false"))
    assert result.returncode == 1 and not target.exists()
    assert leftovers(tmp_path) == []


def test_a_planted_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    target = tmp_path / "managed"
    target.symlink_to(victim)
    assert sh(install_file(str(target), "managed\n", mode="0600")).returncode == 0
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not target.is_symlink() and target.read_text() == "managed\n"


@pytest.mark.parametrize("path,mode", [("relative/x", "0644"), ("/etc/", "0644"),
                                       ("/etc/x", "644; rm -rf /"), ("/a\nb", "0644")])
def test_bad_arguments_are_refused(path: str, mode: str) -> None:
    with pytest.raises(ValueError):
        install_file(path, "x", mode=mode)
