"""The generated inventory, ssh_config and known_hosts, and the image cache key."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from baomi.lab import image, render
from baomi.lab.state import HostRecord, LabPaths, LabState, load_state, save_state


@pytest.fixture
def lab_state() -> tuple[LabState, LabPaths]:
    paths = LabPaths(name="demo", state_dir=Path("/srv/labs/demo"))
    state = LabState(name="demo", subnet="10.213.5.0/24", bridge="demo-br",
                     gateway="10.213.5.1")
    state.hosts = [
        HostRecord("srv1", "plain", ["servers"], "10.213.5.11", 100,
                   host_key="ssh-ed25519 AAAA1", host_keys=["ssh-ed25519 AAAA1", "ssh-rsa R1"]),
        HostRecord("srv2", "systemd", ["servers"], "10.213.5.12", 101,
                   host_key="ssh-ed25519 AAAA2", host_keys=["ssh-ed25519 AAAA2"]),
        HostRecord("bak1", "plain", ["backup"], "10.213.5.13", 102,
                   host_key="ssh-ed25519 AAAA3", host_keys=["ssh-ed25519 AAAA3"]),
        HostRecord("col1", "systemd", ["collector"], "10.213.5.14", 103,
                   host_key="ssh-ed25519 AAAA4", host_keys=["ssh-ed25519 AAAA4"]),
    ]
    return state, paths


def test_inventory_is_a_pyinfra_inventory_with_pinned_keys(
    lab_state: tuple[LabState, LabPaths], tmp_path: Path
) -> None:
    state, paths = lab_state
    inv = tmp_path / "inventory.py"
    inv.write_text(render.inventory(state, paths))
    ns = runpy.run_path(str(inv))
    assert ns["servers"] == ["srv1", "srv2"]
    assert ns["backup"] == ["bak1"]
    assert ns["collector"] == ["col1"]
    assert ns["workstations"] == []
    hosts = dict(ns["all"])
    assert set(hosts) == {"srv1", "srv2", "bak1", "col1"}
    assert hosts["col1"]["lab_groups"] == ["collector"]
    data = hosts["srv2"]
    assert data["ssh_hostname"] == "10.213.5.12"
    assert data["ssh_user"] == "root"
    assert data["ssh_key"] == "/srv/labs/demo/id_ed25519"
    assert data["ssh_known_hosts_file"] == "/srv/labs/demo/known_hosts"
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["lab_flavour"] == "systemd"


def test_ssh_config_pins_keys_and_shares_connections(
    lab_state: tuple[LabState, LabPaths],
) -> None:
    state, paths = lab_state
    text = render.ssh_config(state, paths)
    block = text.split("Host srv1\n", 1)[1].split("\nHost ", 1)[0]
    for line in ("HostName 10.213.5.11", "User root", "IdentityFile /srv/labs/demo/id_ed25519",
                 "UserKnownHostsFile /srv/labs/demo/known_hosts", "StrictHostKeyChecking yes",
                 "ControlMaster auto", "ControlPath /srv/labs/demo/cm/%C",
                 "ControlPersist 60s", "IdentitiesOnly yes", "BatchMode yes"):
        assert line in block


def test_known_hosts_has_alias_and_address_per_key(lab_state: tuple[LabState, LabPaths]) -> None:
    state, _ = lab_state
    lines = render.known_hosts(state).splitlines()
    assert "srv1,10.213.5.11 ssh-ed25519 AAAA1" in lines
    assert "srv1,10.213.5.11 ssh-rsa R1" in lines
    assert len(lines) == 5


def test_every_inventory_names_the_role_groups_even_when_empty(tmp_path: Path) -> None:
    paths = LabPaths(name="empty", state_dir=Path("/srv/labs/empty"))
    state = LabState(name="empty", subnet="10.213.6.0/24", bridge="empty-br",
                     gateway="10.213.6.1")
    inv = tmp_path / "inventory.py"
    inv.write_text(render.inventory(state, paths))
    ns = runpy.run_path(str(inv))
    assert {g: ns[g] for g in ("servers", "workstations", "backup", "collector")} == {
        "servers": [], "workstations": [], "backup": [], "collector": []}


def test_state_round_trips(lab_state: tuple[LabState, LabPaths], tmp_path: Path) -> None:
    state, _ = lab_state
    paths = LabPaths(name="demo", state_dir=tmp_path / "demo")
    save_state(paths, state)
    assert load_state(paths) == state


def test_image_key_changes_with_the_package_list_only() -> None:
    base = image.cache_key()
    assert base == image.cache_key(tuple(reversed(image.PACKAGES)))
    assert base != image.cache_key((*image.PACKAGES, "tcpdump"))
    assert len(base) == 16
    for needed in ("openssh-server", "systemd", "usbguard", "restic", "cryptsetup", "auditd",
                   "python3-venv"):
        assert needed in image.PACKAGES
