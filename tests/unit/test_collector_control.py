"""The collector control's parse/compare on output captured from lab hosts (col1 deployed with
systemd, col2 a fresh plain host), and edits of it standing for the failures seen in the lab."""

from __future__ import annotations

import json
from pathlib import Path

from baomi.controls import collector as core
from baomi.controls import collector_waivers as waivers
from baomi.controls.contract import HostContext, evaluate
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "collector"
# A deployed systemd collector, with the regular audit's sections (captured from a later
# deploy's systemd collector, its timer waiting for the first run: audit_fresh_col1.out).
DEPLOYED = (DATA / "deployed_col1.out").read_text(encoding="utf-8") + "\n" + "".join(
    "==> " + part for part in (DATA / "audit_fresh_col1.out").read_text(encoding="utf-8")
    .split("==> ") if part.startswith("audit_"))


def _offboard_sections(want: core.Desired, enabled: str = "enabled\nenabled\nactive\nactive\n",
                       last: str = "Result=success\nExecMainStatus=0\n"
                                   "ExecMainExitTimestamp=@1764745200\n") -> str:
    """The runner's sections as a deployed systemd collector prints them (the format of
    observe's script: each unit file after its marker line)."""
    units = "".join(f"--- {path}\n{text}" for path, text in want.offboard_units)
    return (f"\n==> offboard_units\n{units}\n<== offboard_units rc=0\n"
            f"\n==> offboard_state\n{enabled}\n<== offboard_state rc=0\n"
            f"\n==> offboard_last\n{last}\n<== offboard_last rc=0\n")


FLEET = {"col1": ["collector"], "srv1": ["servers"], "ws1": ["workstations"]}


def _groups_sections(shipped: str | None = None, fleet_map: str | None = None,
                     mode: str = "root:baomi-collector 640") -> str:
    """The groups map's sections as a deployed collector prints them (stat's line and the
    map; the fleet inventory's map as the venv's baomi derives it on the host)."""
    from baomi.fleet_access import groups_map_text

    text = groups_map_text(FLEET)
    return (f"\n==> waiver_groups\n{mode}\n{text if shipped is None else shipped}\n"
            f"<== waiver_groups rc=0\n"
            f"\n==> fleet_groups\n{text if fleet_map is None else fleet_map}\n"
            f"<== fleet_groups rc=0\n")


# The controller's policy file and the deployed copy's stat line and digest (sha256sum of stdin).
POLICY_SHA256 = "5" * 64


def _policy_section(digest: str = POLICY_SHA256, mode: str = "root:baomi-collector 640") -> str:
    return f"\n==> policy_copy\n{mode}\n{digest}  -\n\n<== policy_copy rc=0\n"


CA = json.loads((DATA / "contract.json").read_text(encoding="utf-8"))["compliant"]["inputs"][
    core.INPUT]


def _want(policy: str = "", ca: str | None = CA, groups: tuple[str, ...] = ("collector",),
          policy_sha256: str | None = POLICY_SHA256) -> core.Desired:
    inputs = {core.INPUT: ca} if ca else {}
    if policy_sha256:
        inputs[waivers.POLICY_INPUT] = policy_sha256
    return core.desired(HostContext.of(load_text(policy), groups, "col1", **inputs))


DEPLOYED += _offboard_sections(_want()) + _groups_sections() + _policy_section()


def _failing(output: str, want: core.Desired | None = None) -> dict[str, str]:
    want = want or _want()
    result = evaluate(core.CONTROL, "col1", want, core.parse(output, want))
    return {f.check: f.found for f in result.findings}


def test_deployed_host_passes() -> None:
    assert _failing(DEPLOYED) == {}


def test_stopped_service_fails_service_port_and_health() -> None:
    stopped = DEPLOYED.replace("enabled\nactive\n", "enabled\nactivating\n")
    stopped = stopped.replace(stopped.split("==> listening\n")[1].split("\n<==")[0], "")
    stopped = stopped.replace("tls TLSv1.3\nstatus HTTP/1.1 200 OK\nbody {\"ok\":true}",
                              "error ConnectionRefusedError [Errno 111] Connection refused")
    failing = _failing(stopped)
    assert failing["collector.service"] == "enabled, activating"
    assert failing["collector.listening"] == "not listening"
    assert "ConnectionRefusedError" in failing["collector.health"]


def test_certificate_from_another_ca_fails_health() -> None:
    other = DEPLOYED.replace(
        "tls TLSv1.3\nstatus HTTP/1.1 200 OK\nbody {\"ok\":true}\n\n<== health rc=0",
        "error SSLCertVerificationError [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: self-signed certificate in certificate chain\n\n<== health rc=1")
    assert "CERTIFICATE_VERIFY_FAILED" in _failing(other)["collector.health"]


def test_no_pinned_ca_is_a_finding_not_a_pass() -> None:
    assert "no CA pinned" in _failing(DEPLOYED, _want(ca=None))["collector.health"]


def test_edited_unit_and_loose_state_folder() -> None:
    edited = DEPLOYED.replace("NoNewPrivileges=yes\n", "").replace("baomi-collector 700",
                                                                   "baomi-collector 755")
    failing = _failing(edited)
    assert failing["collector.service"] == "edited content"
    assert failing["collector.state_dir"] == "baomi-collector:755"


def test_sqlite_outside_the_state_folder_is_refused_with_the_key() -> None:
    want = _want("collector:\n  database: sqlite:////var/lib/baomi/collector.db\n")
    assert want.problem and "collector.database" in want.problem and core.STATE_DIR in want.problem
    assert "must be in /var/lib/baomi-collector/" in _failing(DEPLOYED, want)["collector.installed"]
    assert _want("collector:\n  database: postgresql://collector@db1/baomi\n").problem is None


def test_low_port_gets_only_the_bind_capability() -> None:
    assert "CapabilityBoundingSet=\n" in _want().unit
    low = _want("collector:\n  listen_port: 443\n").unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in low and "--listen 0.0.0.0:443" in low


def test_not_a_collector_host() -> None:
    assert core.not_applicable(_want(groups=("servers",))) is not None
    assert core.not_applicable(_want()) is None


def test_plain_host_needs_the_supervisor() -> None:
    fresh = (DATA / "fresh_col2.out").read_text(encoding="utf-8")
    failing = _failing(fresh)
    assert set(failing) == {"collector.installed", "collector.state_dir", "collector.service",
                            "collector.listening", "collector.health",
                            "collector.waiver_groups", "collector.policy_copy"}
    assert failing["collector.service"] == "not running"
    running = fresh.replace("cat: /run/baomi-collector.pid: No such file or directory\n",
                            f"/bin/sh {core.SUPERVISOR} \n").replace(
        "<== supervisor rc=1", "<== supervisor rc=0")
    assert "collector.service" not in _failing(running)


def test_a_collector_deployed_before_the_ca_key_move_is_named() -> None:
    """Captured from col1 deployed by the previous version: ca.key in the service's folder,
    --db on the command line; both are findings until collector-deploy runs again."""
    old = (DATA / "deployed_before_ca_move_col1.out").read_text(encoding="utf-8")
    old_ca = json.loads((DATA / "old_ca.json").read_text(encoding="utf-8"))["collector_ca"]
    failing = _failing(old, _want(ca=old_ca))
    assert failing.pop("collector.audit_timer")  # that version installed no audit timer
    assert failing.pop("collector.offboard_runner")  # nor the offboarding runner
    assert failing.pop("collector.waiver_groups") == "missing"  # nor the waivers' groups map
    assert failing.pop("collector.policy_copy") == "missing"  # nor the policy's copy
    assert failing == {"collector.state_dir": "readable by the service user",
                       "collector.service": "edited content"}, failing


def test_the_environment_file_carries_the_database_and_the_policys_alerts() -> None:
    want = _want('organisation: t\ncollector:\n  database: "postgresql://b:pw@db/b"\n'
                 '  alert_webhook: "https://chat.example/h?t=x"\n  alert_syslog: false\n')
    assert want.env_file.splitlines()[1:] == [
        "BAOMI_COLLECTOR_DB='postgresql://b:pw@db/b'", "BAOMI_ALERT_MIN_SEVERITY='critical'",
        "BAOMI_ALERT_WEBHOOK='https://chat.example/h?t=x'", "BAOMI_ALERT_SYSLOG='0'",
        "BAOMI_AGENT_SILENT_MINUTES='30'", "BAOMI_AGENT_SILENT_SEVERITY='high'",
        "BAOMI_COLLECTOR_POLICY='/etc/baomi/collector-policy.yaml'",
        "BAOMI_COLLECTOR_GROUPS='/etc/baomi/collector-groups.json'"]
    assert "pw" not in want.unit and "--db" not in want.unit
    quoted = _want("organisation: t\ncollector:\n  alert_webhook: \"https://x/h?a='1\"\n")
    assert quoted.problem and "collector.alert_webhook" in quoted.problem


def test_the_offboarding_runner_disabled_edited_or_failed_is_named() -> None:
    base = DEPLOYED.split("\n==> offboard_units")[0] + _groups_sections() + _policy_section()
    want = _want()
    disabled = base + _offboard_sections(want, "disabled\nenabled\ninactive\nactive\n")
    assert _failing(disabled) == {"collector.offboard_runner": "disabled, inactive"}
    failed = base + _offboard_sections(want, last="Result=exit-code\nExecMainStatus=1\n"
                                                  "ExecMainExitTimestamp=@1764745200\n")
    assert _failing(failed) == {"collector.offboard_runner": "exit-code, exit status 1"}
    never = base + _offboard_sections(want, last="Result=success\nExecMainStatus=0\n"
                                                 "ExecMainExitTimestamp=\n")
    assert _failing(never) == {}
    edited = base + _offboard_sections(want).replace("PathExists=", "#PathExists=")
    assert _failing(edited) == {"collector.offboard_runner": "edited content"}
    missing = base + "\n==> offboard_units\n--- /etc/systemd/system/baomi-offboard.service\n" \
        "cat: /etc/systemd/system/baomi-offboard.service: No such file or directory\n" \
        "\n<== offboard_units rc=1\n"
    found = evaluate(core.CONTROL, "col1", want, core.parse(missing, want)).findings
    assert ("/etc/systemd/system/baomi-offboard.service", "missing") in \
        [(f.subject, f.found) for f in found if f.check == "collector.offboard_runner"]
    result = evaluate(core.CONTROL, "col1", want, core.parse(DEPLOYED, want))
    assert "baomi-offboard.path and baomi-offboard.timer enabled/enabled, active/active" in \
        result.evidence["collector.offboard_runner"]


def test_without_systemd_the_runner_is_not_applicable_and_the_service_is_not_told() -> None:
    want = _want()
    fresh = (DATA / "fresh_col2.out").read_text(encoding="utf-8")
    assert "collector.offboard_runner" in core.skipped(want, core.parse(fresh, want))
    assert "BAOMI_OFFBOARD_RUNNER" not in want.env_for(False)
    assert "BAOMI_OFFBOARD_RUNNER='systemd'" in want.env_for(True)


def test_the_waivers_groups_map_missing_malformed_drifted_or_readable_is_named() -> None:
    base = DEPLOYED.split("\n==> waiver_groups")[0] + _policy_section()
    assert _failing(base) == {"collector.waiver_groups": "missing"}
    gone = base + _groups_sections().replace(
        "root:baomi-collector 640\n", "stat: cannot statx: No such file or directory\n"
    ).replace("<== waiver_groups rc=0", "<== waiver_groups rc=1")
    assert _failing(gone) == {"collector.waiver_groups": "missing"}
    mode = base + _groups_sections(mode="root:baomi-collector 644")
    assert _failing(mode) == {"collector.waiver_groups": "root:baomi-collector 644"}
    bad = _failing(base + _groups_sections(shipped='{"col1": "collector"}'))
    assert bad["collector.waiver_groups"].startswith(
        "malformed: /etc/baomi/collector-groups.json: host 'col1': expected a list"), bad
    drifted = {**FLEET, "ws1": ["servers"], "ws9": ["workstations"]}
    assert _failing(base + _groups_sections(shipped=json.dumps(drifted))) == {
        "collector.waiver_groups": "drifted: 2 host(s) differ (ws1, ws9)"}
    unreadable = base + _groups_sections().replace(
        _groups_sections().split("==> fleet_groups\n")[1],
        "baomi.fleet_access.FleetError: no such inventory file\n<== fleet_groups rc=1\n")
    assert _failing(unreadable) == {
        "collector.waiver_groups": "baomi.fleet_access.FleetError: no such inventory file"}
    result = evaluate(core.CONTROL, "col1", _want(), core.parse(DEPLOYED, _want()))
    assert result.evidence["collector.waiver_groups"] == (
        "/etc/baomi/collector-groups.json root:baomi-collector 640; 3 hosts, compared with "
        "/etc/baomi/collector/fleet/inventory.py")


def test_the_policy_copy_missing_loose_or_another_policy_is_named() -> None:
    base = DEPLOYED.split("\n==> policy_copy")[0]
    assert _failing(base) == {"collector.policy_copy": "missing"}
    gone = base + _policy_section().replace(
        "root:baomi-collector 640\n" + POLICY_SHA256 + "  -\n",
        "stat: cannot statx '/etc/baomi/collector-policy.yaml': No such file or directory\n"
    ).replace("rc=0", "rc=1")
    assert _failing(gone) == {"collector.policy_copy": "missing"}
    assert _failing(base + _policy_section(mode="root:root 644")) == {
        "collector.policy_copy": "root:root 644"}
    other = _failing(base + _policy_section(digest="a" * 64))["collector.policy_copy"]
    assert other.startswith("another policy (sha256 aaaaaaaaaaaaaaaa…)") and \
        "collector-deploy" in other
    # No policy file on the controller (a policy given as text): presence and mode only, and
    # the evidence says the content was not compared.
    want = _want(policy_sha256=None)
    assert _failing(base + _policy_section(digest="a" * 64), want) == {}
    result = evaluate(core.CONTROL, "col1", want, core.parse(DEPLOYED, want))
    assert result.evidence["collector.policy_copy"].endswith(
        "content not compared (the controller's policy is not a file here)")
    result = evaluate(core.CONTROL, "col1", _want(), core.parse(DEPLOYED, _want()))
    assert result.evidence["collector.policy_copy"] == (
        f"/etc/baomi/collector-policy.yaml root:baomi-collector 640, sha256 {POLICY_SHA256}; "
        "equal to the controller's policy")


def test_the_groups_map_holds_names_and_groups_only_and_reads_back() -> None:
    from baomi.fleet_access import FleetError, groups_map_text, parse_groups_map

    text = groups_map_text({"srv1": {"servers", "backup"}, "col1": ["collector"]})
    assert json.loads(text) == {"col1": ["collector"], "srv1": ["backup", "servers"]}
    assert parse_groups_map(text) == {"col1": {"collector"}, "srv1": {"backup", "servers"}}
    try:
        groups_map_text({"srv1": ["servers; rm -rf /"]})
    except FleetError as exc:
        assert "not a plain name" in str(exc)
    else:
        raise AssertionError("a group name that is not plain was shipped")
