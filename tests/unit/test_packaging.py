"""The rooms' import rules and the dependency groups (DESIGN.md: an endpoint never gets pyinfra)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_STACK = ("pyinfra", "testinfra", "pytest-testinfra", "paramiko", "gevent", "cryptography")


def imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_base_install_carries_no_admin_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ADMIN_STACK:
        assert name not in base, f"{name} in the base dependencies: endpoints would get it"
    admin = " ".join(project["optional-dependencies"]["admin"]).lower()
    assert "pyinfra>=3" in admin and "pytest-testinfra" in admin


def test_core_imports_only_stdlib_yaml_and_its_front_door() -> None:
    """baomi/ may import the stdlib and PyYAML; the CLI adds click and rich and dispatches to
    the admin rooms lazily (inside functions), never at import time of a core module."""
    allowed_third_party = {"yaml", "click", "rich"}
    rooms = {"baomi", "lab", "deploy", "checks"}
    import sys

    stdlib = set(sys.stdlib_module_names)
    for path, names in imports("baomi").items():
        third = names - stdlib - rooms - {"__future__"}
        assert third <= allowed_third_party, f"{path} imports {sorted(third)}"
        if not path.endswith("cli.py"):
            assert not names & {"deploy", "checks", "lab"}, f"{path} imports an admin room"
    for path, names in imports("lab").items():
        assert not names & {"pyinfra", "testinfra", "deploy", "checks"}, path
