"""The front door (`baomi.cli`) loads a subcommand only when it runs.

`baomi --help` and `baomi policy check` run on every endpoint and in every shell completion;
they must not pay for (or need) the administrator's stack: pyinfra, testinfra, cryptography.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from baomi import cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pyinfra", "pyinfra_cli", "testinfra", "cryptography", "gevent", "paramiko",
         "baomi.controller", "baomi.deploy", "baomi.checks", "baomi.lab")

PROBE = """
import sys
import baomi.cli
after_import = set(sys.modules)
for args in (["--help"], ["policy", "--help"], ["policy", "check", sys.argv[1]]):
    baomi.cli.main(args, standalone_mode=False)
heavy = sys.argv[2].split(",")
for stage, names in (("import", after_import), ("commands", set(sys.modules))):
    loaded = sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in heavy))
    print(stage, ",".join(loaded))
"""


def test_help_and_policy_check_import_no_subcommand_and_no_admin_stack() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "policy.yaml"),
                             ",".join(HEAVY)], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # --help lists every command from the table, without importing one.
    assert all(f"  {name} " in result.stdout for name in cli.COMMANDS), result.stdout
    assert "valid (" in result.stdout
    assert lines[-2:] == ["import ", "commands "], lines[-2:]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_table_entry_is_the_command_it_names_with_its_own_short_help(name: str) -> None:
    command = cli.load_command(name)
    assert command.name == name
    assert command.get_short_help_str(limit=1000) == cli.COMMANDS[name][1]


def test_a_command_whose_room_is_not_installed_is_one_clear_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "collect", ("baomi.not_installed.cli:collect", "Collect."))
    result = CliRunner().invoke(cli.main, ["collect"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: baomi collect needs the administrator's stack (pip install 'baomi[admin]'): "
        "No module named 'baomi.not_installed'"]
    assert isinstance(cli.main.get_command(click.Context(cli.main), "policy"), click.Group)
