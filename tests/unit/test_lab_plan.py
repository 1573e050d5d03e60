"""Pure logic of the lab: host naming, address allocation, subnet choice, name checks."""

from __future__ import annotations

import pytest

from baomi.lab import net
from baomi.lab.errors import LabError
from baomi.lab.lifecycle import DEFAULT_REQUEST, Request, etc_hosts, plan_hosts
from baomi.lab.state import LabPaths, LabState, check_lab_name


def test_default_demo_lab_has_srv2_as_the_systemd_server() -> None:
    plan = plan_hosts([], DEFAULT_REQUEST)
    assert [(p.name, p.flavour, p.groups) for p in plan] == [
        ("srv1", "plain", ("servers",)),
        ("srv2", "systemd", ("servers",)),
        ("ws1", "plain", ("workstations",)),
        ("bak1", "plain", ("backup",)),
    ]


def test_adding_hosts_numbers_on_from_existing_ones() -> None:
    plan = plan_hosts(["srv1", "srv2", "ws1"], Request(servers=2, workstations=1, vm=True))
    assert [p.name for p in plan] == ["srv3", "srv4", "ws2", "vm1"]
    assert plan[-1].groups == ("servers", "vm") and plan[-1].flavour == "vm"


def test_collector_hosts_are_col_in_group_collector_systemd_last() -> None:
    req = Request(servers=1, collector=2, systemd_collector=1)
    req.validate()
    plan = plan_hosts(["col1"], req)
    assert [(p.name, p.role, p.flavour, p.groups) for p in plan] == [
        ("srv1", "servers", "plain", ("servers",)),
        ("col2", "collector", "plain", ("collector",)),
        ("col3", "collector", "systemd", ("collector",)),
    ]
    assert not Request(collector=1).is_empty()


def test_more_systemd_collector_hosts_than_collector_hosts_is_refused() -> None:
    with pytest.raises(LabError, match=r"--systemd-collector 2 is more than --collector 1"):
        Request(collector=1, systemd_collector=2).validate()
    with pytest.raises(LabError, match=r"--collector -1: use a number from 0 to 50"):
        Request(collector=-1).validate()


def test_only_one_vm_per_lab() -> None:
    with pytest.raises(LabError):
        plan_hosts(["vm1"], Request(vm=True))


def test_more_systemd_servers_than_servers_is_refused() -> None:
    with pytest.raises(LabError, match="OF the servers"):
        Request(servers=1, systemd_servers=2).validate()


def test_addresses_start_at_11_and_fill_gaps() -> None:
    subnet = net.subnet_for(7)
    assert subnet == "10.213.7.0/24"
    assert net.gateway_for(subnet) == "10.213.7.1"
    assert net.next_address(subnet, []) == "10.213.7.11"
    assert net.next_address(subnet, ["10.213.7.11", "10.213.7.13"]) == "10.213.7.12"


def test_full_subnet_is_an_error() -> None:
    used = [f"10.213.7.{i}" for i in range(net.FIRST_HOST, net.LAST_HOST + 1)]
    with pytest.raises(LabError, match="full"):
        net.next_address("10.213.7.0/24", used)


def test_subnet_choice_is_stable_and_skips_taken_octets() -> None:
    first = net.choose_octet("baomi", [])
    assert first == net.preferred_octet("baomi")
    assert net.choose_octet("baomi", [first]) == (first + 1) % 256
    with pytest.raises(LabError):
        net.choose_octet("baomi", range(256))


@pytest.mark.parametrize("name", ["baomi", "t1234567", "a"])
def test_good_lab_names(name: str) -> None:
    assert check_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "Baomi", "with-dash", "toolongname", "1abc", "a/b"])
def test_bad_lab_names(name: str) -> None:
    with pytest.raises(LabError):
        check_lab_name(name)


def test_interface_names_fit_the_kernel_limit() -> None:
    assert net.host_ifname("t1234567", "srv999") == "t1234567-srv999"
    assert len(net.bridge_name("t1234567")) <= 15
    with pytest.raises(LabError):
        net.host_ifname("t1234567", "srv1000")


def test_etc_hosts_lists_other_hosts_not_itself_twice() -> None:
    state = LabState(name="x", subnet="10.213.1.0/24", bridge="x-br", gateway="10.213.1.1")
    text = etc_hosts(state, [("10.213.1.11", "srv1"), ("10.213.1.12", "ws1")], "srv1")
    assert "127.0.1.1\tsrv1" in text
    assert "10.213.1.12\tws1" in text
    assert "10.213.1.11" not in text


def test_etc_hosts_names_each_host_once_when_state_and_new_hosts_overlap() -> None:
    from baomi.lab.state import HostRecord

    state = LabState(name="x", subnet="10.213.1.0/24", bridge="x-br", gateway="10.213.1.1")
    state.hosts.append(HostRecord(name="bak1", flavour="plain", groups=["backup"],
                                  address="10.213.1.14", pid=0))
    text = etc_hosts(state, [("10.213.1.14", "bak1"), ("10.213.1.11", "srv1")], "srv1")
    assert text.count("\tbak1\n") == 1, text


def test_paths_follow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("BAOMI_LAB_DIR", "/tmp/labs")
    paths = LabPaths.for_lab("demo")
    assert str(paths.state_dir) == "/tmp/labs/demo"
    assert str(paths.key) == "/tmp/labs/demo/id_ed25519"
