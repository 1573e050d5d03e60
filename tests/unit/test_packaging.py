"""The rooms' import rules and the dependency groups (DESIGN.md: an endpoint never gets pyinfra).

The rooms are top-level folders of the repository (``deploy/``, ``checks/``, ``lab/``,
``controller/``) that install under one name, ``baomi`` (``baomi.deploy``...): imports name them
so, never bare.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_STACK = ("pyinfra", "testinfra", "pytest-testinfra", "paramiko", "gevent", "cryptography")
ROOMS = ("deploy", "checks", "lab", "controller", "collector", "agent")


def imports(folder: str) -> dict[str, set[str]]:
    """{file: imported names}; ``baomi.X`` counts as ``baomi.X`` (the room), others by top name."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                parts = module.split(".")
                names.add(".".join(parts[:2]) if parts[0] == "baomi" else parts[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_base_install_carries_no_admin_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ADMIN_STACK:
        assert name not in base, f"{name} in the base dependencies: endpoints would get it"
    admin = " ".join(project["optional-dependencies"]["admin"]).lower()
    assert "pyinfra>=3" in admin and "pytest-testinfra" in admin


def test_rooms_are_imported_under_the_baomi_name() -> None:
    for folder in ("baomi", "tests", *ROOMS):
        for path, names in imports(folder).items():
            bare = names & set(ROOMS)
            assert not bare, f"{path} imports {sorted(bare)}: write baomi.{sorted(bare)[0]}"


def test_core_imports_only_stdlib_yaml_and_its_front_door() -> None:
    """baomi/ may import the stdlib and PyYAML; the front door and baomi.ui add click and rich.
    No core module imports an admin room: the front door names the rooms' commands by string
    (``baomi.cli.COMMANDS``) and imports one only when it runs (tests/unit/test_front_door.py
    runs ``baomi --help`` and ``policy check`` and finds no room and no admin stack loaded)."""
    allowed_third_party = {"yaml", "click", "rich"}
    admin_rooms = {f"baomi.{room}" for room in ROOMS}
    stdlib = set(sys.stdlib_module_names)
    for path, names in imports("baomi").items():
        if any(path.startswith(f"baomi/{room}/") for room in ROOMS):
            continue  # the links to the rooms; checked below under their own folders
        third = {n for n in names if not n.startswith("baomi")} - stdlib - {"__future__"}
        assert third <= allowed_third_party, f"{path} imports {sorted(third)}"
        assert not names & admin_rooms, f"{path} imports an admin room"
    for path, names in imports("lab").items():
        assert not names & {"pyinfra", "testinfra", "baomi.deploy", "baomi.checks"}, path


def test_no_command_module_imports_the_front_door() -> None:
    """The circle stays gone: the front door loads the controller's commands, never the reverse;
    what commands share comes from the leaf ``baomi.ui``, which imports no room and no CLI."""
    for path, names in imports("controller").items():
        assert "baomi.cli" not in names, f"{path} imports baomi.cli: use baomi.ui"
    ui = imports("baomi")["baomi/ui.py"]
    assert not ui & {"baomi.cli", *(f"baomi.{room}" for room in ROOMS)}, sorted(ui)


def test_agent_room_needs_only_its_endpoint_dependencies() -> None:
    """``baomi[agent]`` (watchdog, psutil, PyYAML; HTTP from the stdlib) is all an endpoint
    gets: the agent imports no admin stack, no web framework, no other room but the core."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = " ".join(project["optional-dependencies"]["agent"]).lower()
    allowed = {"watchdog", "psutil", "yaml", "click", "rich"}
    forbidden = {"pyinfra", "gevent", "testinfra", "starlette", "uvicorn", "paramiko",
                 "cryptography", "psycopg", "httptools", "uvloop"}
    assert not any(name in extra for name in forbidden), extra
    stdlib = set(sys.stdlib_module_names)
    for path, names in imports("agent").items():
        third = {n for n in names if not n.startswith("baomi")} - stdlib - {"__future__"}
        assert third <= allowed, f"{path} imports {sorted(third - allowed)}"
        rooms = {n for n in names if n.startswith("baomi.")} & {f"baomi.{r}" for r in ROOMS}
        assert rooms <= {"baomi.agent"}, f"{path} imports {sorted(rooms)}"


@pytest.mark.timeout(300)
def test_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """``pip install baomi[admin]`` adds one name to site-packages, with every room under it."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("baomi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"baomi"}, f"top-level names in the wheel: {sorted(top)}"
    for module in ("baomi/deploy/baseline.py", "baomi/checks/conftest.py", "baomi/lab/cli.py",
                   "baomi/controller/commands/offboard.py", "baomi/controls/ssh.py",
                   "baomi/collector/app.py"):
        assert module in names, f"{module} missing from the wheel"
