"""Shipping wheels: what names the caches, the manifest, and the host's refusal reasons.

The upload and the venv install run against lab hosts in
tests/integration/test_collector_deploy.py; this file covers the pure parts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from baomi.deploy import wheels as w

PYPROJECT = b"""
[build-system]
requires = ["setuptools>=77"]
[project]
name = "baomi"
dependencies = ["PyYAML>=6"]
[project.optional-dependencies]
collector = ["starlette>=0.40"]
agent = ["watchdog"]
[tool.setuptools.package-dir]
"baomi" = "baomi"
"baomi.deploy" = "deploy"
"""


def test_deps_key_follows_what_chooses_dependencies_only() -> None:
    key = w.deps_key(PYPROJECT, "collector", "cpython-311-x86_64")
    assert key == w.deps_key(PYPROJECT + b"\n# a comment\n", "collector", "cpython-311-x86_64")
    assert key == w.deps_key(PYPROJECT.replace(b'"watchdog"', b'"watchdog>=4"'), "collector",
                             "cpython-311-x86_64"), "another extra's change must not count"
    for changed in (w.deps_key(PYPROJECT.replace(b"0.40", b"0.41"), "collector",
                               "cpython-311-x86_64"),
                    w.deps_key(PYPROJECT.replace(b"PyYAML>=6", b"PyYAML>=6.0.1"), "collector",
                               "cpython-311-x86_64"),
                    w.deps_key(PYPROJECT, "agent", "cpython-311-x86_64"),
                    w.deps_key(PYPROJECT, "collector", "cpython-312-x86_64"),
                    w.deps_key(PYPROJECT, "collector", "cpython-311-x86_64", b"rich==15.0.0")):
        assert changed != key


def test_manifest_is_content_sensitive_and_order_free() -> None:
    a = [("a-1-py3-none-any.whl", b"one"), ("b-2-py3-none-any.whl", b"two")]
    assert w.manifest_of(a) == w.manifest_of(list(reversed(a)))
    assert w.manifest_of(a) != w.manifest_of([a[0], ("b-2-py3-none-any.whl", b"tw0")])
    assert w.manifest_of(a) != w.manifest_of(a[:1])


def test_lock_lines_name_every_wheel() -> None:
    assert w.lock_lines(["PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl",
                         "markdown_it_py-4.3.0-py3-none-any.whl"]) == (
        "markdown-it-py==4.3.0", "pyyaml==6.0.4")
    with pytest.raises(w.WheelError, match="not a wheel file name"):
        w.lock_lines(["notes.txt"])


def test_package_dirs_come_from_the_mapping() -> None:
    assert w.package_dirs(PYPROJECT) == ["baomi", "deploy"]


def test_source_digest_sees_edits_and_links_but_not_bytecode(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(PYPROJECT)
    (tmp_path / "baomi").mkdir()
    (tmp_path / "deploy").mkdir()
    (tmp_path / "baomi" / "x.py").write_text("x = 1\n")
    os.symlink("../deploy", tmp_path / "baomi" / "deploy")
    first = w.source_digest(tmp_path)
    (tmp_path / "baomi" / "__pycache__").mkdir()
    (tmp_path / "baomi" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert w.source_digest(tmp_path) == first
    (tmp_path / "deploy" / "y.py").write_text("y = 2\n")
    second = w.source_digest(tmp_path)
    assert second != first
    (tmp_path / "baomi" / "x.py").write_text("x = 2\n")
    assert w.source_digest(tmp_path) not in (first, second)


def test_unknown_extra_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(PYPROJECT)
    with pytest.raises(w.WheelError, match=r"no extra 'nope' \(have agent, collector\)"):
        w.build("nope", root=tmp_path, cache_dir=tmp_path / "cache")


def _set(tag: str = "cpython-311-x86_64") -> w.WheelSet:
    return w.WheelSet("collector", Path("/x"), ("baomi-0.1-py3-none-any.whl",), "ab" * 16, tag,
                      ("baomi==0.1",))


def test_host_problems_are_named() -> None:
    assert w.host_problem("cpython-311-x86_64\nvenv\n", _set()) is None
    assert "python3 is not installed" in str(w.host_problem("none\nno-venv\n", _set()))
    assert "install python3-venv" in str(w.host_problem("cpython-311-x86_64\nno-venv", _set()))
    mismatch = str(w.host_problem("cpython-312-aarch64\nvenv", _set()))
    assert "cpython-312-aarch64" in mismatch and "cpython-311-x86_64" in mismatch


def test_host_tag_script_reads_this_machine_like_the_controller() -> None:
    """The script's first line is what python_tag() says for the same interpreter."""
    out = subprocess.run(["sh", "-c", w.host_tag_script()], capture_output=True, text=True,
                         check=True).stdout.split()
    if Path(sys.executable).resolve() == Path("/usr/bin/python3").resolve():
        assert out[0] == w.python_tag()
    assert out[0].startswith("cpython-") and out[1] in ("venv", "no-venv")


def test_installed_test_needs_link_and_manifest(tmp_path: Path) -> None:
    prefix = str(tmp_path)
    manifest = "cd" * 16
    link, venv = w.venv_paths("svc", manifest, prefix)

    def installed() -> bool:
        return subprocess.run(["sh", "-c", w.installed_test("svc", manifest, prefix)]
                              ).returncode == 0

    assert not installed()
    Path(venv).mkdir(parents=True)
    os.symlink(f"svc.venvs/{Path(venv).name}", link)
    assert not installed(), "a venv without its manifest is an interrupted install"
    (Path(venv) / w.MANIFEST_FILE).write_text(manifest + "\n")
    assert installed()
    (Path(venv) / w.MANIFEST_FILE).write_text("ef" * 16 + "\n")
    assert not installed(), "other wheels in the venv"


def test_prune_keeps_the_newest_and_those_in_use(tmp_path: Path) -> None:
    for i, name in enumerate(["deps-a", "deps-b", "deps-c", "deps-d", "baomi-1", "sets/m1"]):
        (tmp_path / name).mkdir(parents=True)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    in_use = {tmp_path / "deps-a", tmp_path / "baomi-1", tmp_path / "sets/m1"}
    removed = w.prune(tmp_path, in_use, keep=2)
    assert removed == [tmp_path / "deps-c", tmp_path / "deps-b"]
    assert {p.name for p in tmp_path.glob("deps-*")} == {"deps-a", "deps-d"}
    assert (tmp_path / "baomi-1").is_dir() and (tmp_path / "sets/m1").is_dir()
