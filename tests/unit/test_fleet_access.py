"""The collector's access to the fleet and its regular audit: key line, inventory, known_hosts,
unit files and the audit-timer check's judgement (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from baomi import fleet_access as fleet
from baomi.controls import collector as core
from baomi.controls import collector_runs as runs
from baomi.controls.contract import HostContext, evaluate
from baomi.deploy import wheels
from baomi.inventory import read
from baomi.policy import load_text

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0ZbR1cFqG7X3pPq0m2kq9x8a5Q2sL7l0u1vQe5b3ZC root@col1"


def test_key_line_is_restricted_to_the_collectors_addresses() -> None:
    line = fleet.key_line(KEY + "\n", ["10.213.7.5", "fd00::5", "10.213.7.5"], "col1")
    assert line == ('restrict,from="10.213.7.5,fd00::5" ssh-ed25519 '
                    f"{KEY.split()[1]} baomi-collector-fleet@col1")


@pytest.mark.parametrize(("key", "addresses", "said"), [
    ("ssh-rsa AAAAB3Nza root@x", ["10.0.0.1"], "not one ssh-ed25519 key"),
    ('command="sh" ' + KEY, ["10.0.0.1"], "not one ssh-ed25519 key"),
    (KEY, ['10.0.0.1",command="sh'], "is not an IP address"),
    (KEY, [], "no address to restrict"),
])
def test_key_line_refuses_what_could_widen_the_key(key: str, addresses: list[str],
                                                   said: str) -> None:
    with pytest.raises(fleet.FleetError, match=said):
        fleet.key_line(key, addresses, "col1")


def test_the_fleet_inventory_reads_back_with_the_collectors_key(tmp_path: Path) -> None:
    hosts = fleet.fleet_hosts({
        "srv1": ({"servers"}, {"ssh_hostname": "10.0.0.2", "ssh_key": "/home/op/.ssh/id",
                               "ssh_known_hosts_file": "/home/op/kh"}),
        "ws1": ({"workstations", "linux"}, {"ssh_port": "2222",
                                            "ssh_known_hosts_file": "/home/op/kh"}),
    })
    path = tmp_path / "inventory.py"
    path.write_text(fleet.fleet_inventory(hosts))
    back = read(path)
    assert back["srv1"].groups == {"servers"}
    assert back["ws1"].groups == {"workstations", "linux"}
    assert back["srv1"].data == {"ssh_hostname": "10.0.0.2", "ssh_user": "root",
                                 "ssh_key": fleet.KEY, "ssh_known_hosts_file": fleet.KNOWN_HOSTS,
                                 "ssh_strict_host_key_checking": "yes"}
    assert back["ws1"].data["ssh_port"] == 2222 and back["ws1"].data["ssh_hostname"] == "ws1"


@pytest.mark.parametrize(("data", "said"), [
    ({}, "srv1: no ssh_known_hosts_file"),
    ({"ssh_known_hosts_file": "/kh", "ssh_hostname": "a b"}, "is not a plain value"),
    ({"ssh_known_hosts_file": "/kh", "ssh_port": "22x"}, "ssh_port '22x' is not a number"),
])
def test_a_host_without_pinned_keys_or_with_odd_values_is_refused(data: dict[str, str],
                                                                  said: str) -> None:
    with pytest.raises(fleet.FleetError, match=said):
        fleet.fleet_hosts({"srv1": ({"servers"}, data)})


def test_known_hosts_are_the_pinned_lines_once() -> None:
    text = fleet.known_hosts({"/a": "# c\nsrv1 ssh-ed25519 AAA\n\n",
                              "/b": "srv1 ssh-ed25519 AAA\nsrv2 ssh-ed25519 BBB\n"})
    assert text == "srv1 ssh-ed25519 AAA\nsrv2 ssh-ed25519 BBB\n"
    with pytest.raises(fleet.FleetError, match="hold no host key"):
        fleet.known_hosts({"/a": "# nothing\n"})


def test_units_follow_the_policy_schedule() -> None:
    want = core.desired(HostContext.of(load_text("reporting:\n  schedule: '*-*-* 02:00'\n"),
                                       ("collector",), "col1"))
    assert "OnCalendar=*-*-* 02:00\nPersistent=true\n" in want.audit_timer
    assert want.problem is None
    service = want.audit_service
    assert "Type=oneshot" in service and "SuccessExitStatus=1" in service
    assert ('--name "collector (audit)" --role auditor --hours 3 --url https://localhost:8443'
            in service)
    assert "ExecStart=/opt/baomi/collector/bin/baomi audit -i " + fleet.INVENTORY in service
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" in service  # SSH out


def _run(**last: str) -> runs.AuditRun:
    want = core.desired(HostContext.of(load_text(""), ("collector",), "col1"))
    return runs.AuditRun(want.audit_timer, want.audit_service, "enabled", "active",
                         {"Now": "@1000000", **last}, 7 * 86400.0, "")


def _found(run: runs.AuditRun) -> list[str]:
    want = core.desired(HostContext.of(load_text(""), ("collector",), "col1"))
    return [f.found for f in runs.audit_findings(want.audit_timer, want.audit_service,
                                                 want.schedule, run)]


def test_audit_timer_judgement() -> None:
    week = 7 * 86400
    assert _found(_run(Result="success", ExecMainExitTimestamp="@999000")) == []
    # never ran, the timer waiting for less than the schedule allows: no finding
    assert _found(_run(ExecMainExitTimestamp="", TimerActiveEnterTimestamp="@990000")) == []
    failed = _found(_run(Result="exit-code", ExecMainStatus="2",
                         ExecMainExitTimestamp="@999000"))
    assert failed == ["exit-code, exit status 2"]
    stale = _found(_run(Result="success", ExecMainExitTimestamp=f"@{1000000 - 3 * week}"))
    assert stale == ["the last run: 504.0 h ago"]
    never = _found(_run(ExecMainExitTimestamp="",
                        TimerActiveEnterTimestamp=f"@{1000000 - 3 * week}"))
    assert never == ["no run since the timer started: 504.0 h ago"]
    off = runs.AuditRun(None, None, "disabled", "inactive", {"Now": "@1000000"}, None,
                        "systemd-analyze could not read the schedule")
    assert _found(off) == ["missing", "missing", "disabled, inactive",
                           "systemd-analyze could not read the schedule"]


def test_schedule_period_from_systemd_analyze() -> None:
    printed = ("  Original form: weekly\nNormalized form: Mon *-*-* 00:00:00\n"
               "    Next elapse: Mon 2026-12-07 00:00:00 UTC\n       From now: 3 days left\n"
               "       Iter. #2: Mon 2026-12-14 00:00:00 UTC\n")
    assert runs.period(printed) == (7 * 86400.0, "")
    weekdays = ("    Next elapse: Thu 2026-12-03 02:00:00 UTC\n"
                "       Iter. #2: Fri 2026-12-04 02:00:00 UTC\n"
                "       Iter. #3: Mon 2026-12-07 02:00:00 UTC\n")
    assert runs.period(weekdays) == (3 * 86400.0, "")  # the weekend, not one day
    assert runs.period(None)[0] is None


def test_two_extras_make_one_wheel_set_key() -> None:
    pyproject = (wheels.ROOT / "pyproject.toml").read_bytes()
    tag = "cpython-311-x86_64"
    both = wheels.deps_key(pyproject, "collector,admin", tag)
    assert both not in (wheels.deps_key(pyproject, "collector", tag),
                        wheels.deps_key(pyproject, "admin", tag))
    assert wheels.extra_names("collector,admin") == ["collector", "admin"]
    assert wheels.extra_names("") == []


DATA = Path(__file__).parent / "data" / "collector"


def _captured(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(failing check → found, passing evidence) of output captured from a lab collector."""
    ca = (DATA / "audit_col1_ca.pem").read_text(encoding="utf-8")
    want = core.desired(HostContext.of(load_text(""), ("collector",), "col1",
                                       **{core.INPUT: ca}))
    result = evaluate(core.CONTROL, "col1", want,
                      core.parse((DATA / name).read_text(encoding="utf-8"), want))
    # Captured before the offboarding runner, the waivers' groups map and the policy copy's
    # check existed: theirs are tested in test_collector_control.py and test_offboard_runner.py.
    return ({f.check: f.found for f in result.findings
             if f.check not in ("collector.offboard_runner", "collector.waiver_groups",
                                "collector.policy_copy")},
            dict(result.evidence))


def test_captured_timer_waiting_ran_and_disabled() -> None:
    assert _captured("audit_fresh_col1.out")[0] == {}
    failing, evidence = _captured("audit_ran_col1.out")
    assert failing == {}
    assert "last run success at 2026-12-03T04:28:35Z" in evidence["collector.audit_timer"]
    assert _captured("audit_disabled_col1.out")[0] == {
        "collector.audit_timer": "disabled, inactive"}


def _deploy_says(tmp_path: Path, inventory: str, policy: str = "") -> tuple[int, str]:
    from click.testing import CliRunner

    from baomi.cli import main

    (tmp_path / "inventory.py").write_text(inventory)
    (tmp_path / "policy.yaml").write_text(policy)
    result = CliRunner().invoke(main, ["collector-deploy", "-i", str(tmp_path / "inventory.py"),
                                       "--policy", str(tmp_path / "policy.yaml")])
    return result.exit_code, result.output


def test_collector_deploy_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "kh").write_text("10.0.0.2 ssh-ed25519 AAAA\n")
    code, said = _deploy_says(tmp_path, "collector = [('col1', {'ssh_hostname': '10.0.0.2'})]\n")
    assert code == 2 and len(said.strip().splitlines()) == 1, said
    assert "col1: no ssh_known_hosts_file" in said and "Traceback" not in said
    pinned = f"collector = [('col1', {{'ssh_known_hosts_file': '{tmp_path / 'kh'}'}})]\n"
    code, said = _deploy_says(tmp_path, pinned, "reporting:\n  schedule: every blue moon\n")
    assert code == 2 and len(said.strip().splitlines()) == 1, said
    assert "reporting.schedule 'every blue moon': not a systemd calendar expression" in said
