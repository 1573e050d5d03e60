"""R-USB, R-DEV on real lab hosts: the apply/check cycle, and USBGuard itself deciding on
simulated devices (umockdev backend) with the rules the deploy installed.

The lab kernel has no USB; Debian's usbguard-daemon runs with DeviceManagerBackend=umockdev and
reads simulated devices (tests/integration/data/usb/*.umockdev) that are hot-plugged with `ln`
into the directory named by USBGUARD_UMOCKDEV_DEVICEDIR after the daemon started.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baomi.controls import usb as core
from baomi.controls import usb_devices as usbdev
from baomi.lab.testing import LabHandle
from baomi.policy import Policy, load
from tests.integration.controls import ROOT, apply, check, outcomes

C = "usb"
CHECK = "test_usb"
DATA = Path(__file__).parent / "data" / "usb"
AUTHORISED = "0781:5567:4C530001230517109182"  # authorised_stick.umockdev; the other stick
# has the same vendor:product and another serial.
SIM = "/tmp/baomi-usb-sim"
PLUGGED = ("keyboard", "authorised_stick", "unauthorised_stick", "keyboard_with_storage")


def _policy_file(tmp_path: Path, name: str, usb_lines: str) -> Path:
    text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    start = text.index("usb:")
    end = text.index("\n\n", start)
    path = tmp_path / name
    path.write_text(text[:start] + "usb:\n" + usb_lines + text[end:], encoding="utf-8")
    return path


def _ssh(lab: LabHandle, host: str, command: str, timeout: float = 60.0) -> str:
    result = lab.ssh(host, command, timeout=timeout)
    assert result.returncode == 0, f"{host}: {command[:200]}\n{result.stdout}{result.stderr}"
    return result.stdout


def test_usb_cycle(lab: LabHandle, tmp_path: Path) -> None:
    plain = lab.flavour("plain")[0]
    systemd = lab.flavour("systemd")[0]
    hosts = [plain, systemd]

    fresh = check(lab, CHECK, hosts)
    assert fresh.returncode == 1, fresh.stdout
    assert "modprobe -n -v usb-storage: expected install /bin/false, found 'modprobe: FATAL: " \
           "Module usb-storage not found" in fresh.stdout
    assert f"{core.RULES_FILE}: expected the policy's allow-list, found missing " \
           "'allow with-interface match-all { 09:*:* } label \"baomi-hub\"'" in fresh.stdout
    # Every removable-storage bus of usb.refuse_buses, each driver named.
    for module in ("firewire-core", "firewire-sbp2", "thunderbolt", "mmc_block"):
        assert f"modprobe -n -v {module}: expected install /bin/false, found 'modprobe: " \
               f"FATAL: Module {module} not found" in fresh.stdout, module
    # Debian's default lets the plugdev group allow devices over IPC: reported.
    assert f"{core.DAEMON_CONF} IPCAllowedGroups: expected root, found root plugdev" \
        in fresh.stdout

    first = apply(lab, C, limit=hosts)
    assert set(outcomes(first, C).values()) == {"changed"}
    passed = check(lab, CHECK, hosts)
    assert passed.returncode == 0, passed.stdout
    # modprobe resolves to the refusal, with underscores in --showconfig.
    assert _ssh(lab, plain, "modprobe -n -v usb-storage").strip() == "install /bin/false"
    assert "install uas /bin/false" in _ssh(lab, plain, "modprobe --showconfig")
    assert _ssh(lab, plain, "modprobe -n -v mmc_block").strip() == "install /bin/false"
    # The systemd host: unit enabled, the apply did not fail although the daemon cannot run.
    assert _ssh(lab, systemd, "systemctl is-enabled usbguard").strip() == "enabled"
    assert lab.ssh(systemd, "test -d /sys/bus/usb").returncode != 0

    second = apply(lab, C, limit=hosts)
    assert outcomes(second, C) == {plain: "unchanged", systemd: "unchanged"}

    # An administrator allows everything and lets usb-storage load again; another disables
    # the service.
    _ssh(lab, plain, f"echo allow >> {core.RULES_FILE} && rm {core.MODPROBE_FILE}")
    _ssh(lab, systemd, "systemctl disable usbguard")
    drifted = check(lab, CHECK, hosts)
    assert drifted.returncode == 1
    assert f"{core.RULES_FILE}: expected the policy's allow-list, found extra 'allow'" \
        in drifted.stdout
    assert "modprobe -n -v uas: expected install /bin/false, found 'modprobe: FATAL: Module " \
           "uas not found" in drifted.stdout
    assert "modprobe -n -v thunderbolt: expected install /bin/false" in drifted.stdout
    assert "systemctl is-enabled usbguard: expected enabled, found disabled" in drifted.stdout
    repaired = apply(lab, C, limit=hosts)
    assert outcomes(repaired, C) == {plain: "changed", systemd: "changed"}
    assert check(lab, CHECK, hosts).returncode == 0

    # Authorising a stick is a policy change: its rule appears, and the module refusal goes
    # (a refused usb-storage would make the authorised stick useless).
    authorised = _policy_file(tmp_path, "authorised.yaml", f"  allowed: ['{AUTHORISED}']\n")
    before = check(lab, CHECK, [plain], policy=authorised)
    assert "missing 'allow id 0781:5567 serial \"4C530001230517109182\" with-interface " \
           "match-all { 08:*:* } label \"baomi-authorised\"'" in before.stdout
    # ... while the other buses stay refused in the same file.
    assert f"{core.MODPROBE_FILE}: expected the baomi refusal of firewire-ohci, " \
           "firewire-core, firewire-sbp2, thunderbolt, mmc_block, found edited content" \
        in before.stdout
    changed = apply(lab, C, limit=[plain], policy=authorised)
    assert outcomes(changed, C) == {plain: "changed"}
    assert check(lab, CHECK, [plain], policy=authorised).returncode == 0
    assert "FATAL" in lab.ssh(plain, "modprobe -n -v usb-storage").stderr
    assert _ssh(lab, plain, "modprobe -n -v firewire-sbp2").strip() == "install /bin/false"
    apply(lab, C, limit=[plain])  # back to the default policy for other tests
    assert check(lab, CHECK, [plain]).returncode == 0


@contextmanager
def _daemon(lab: LabHandle, host: str, sim: str) -> Iterator[None]:
    """usbguard-daemon on the deployed rules and settings, umockdev backend; killed by PID."""
    _ssh(lab, host, f"rm -rf {sim} && mkdir -p {sim}/src {sim}/dev")
    for f in sorted(DATA.glob("*.umockdev")):
        data = base64.b64encode(f.read_bytes()).decode()
        _ssh(lab, host, f"echo {data} | base64 -d > {sim}/src/{f.name}")
    # The deployed settings with two changes only: simulated devices, audit file in SIM.
    _ssh(lab, host, f"sed -e 's/^DeviceManagerBackend=.*/DeviceManagerBackend=umockdev/' "
                    f"-e 's|^AuditFilePath=.*|AuditFilePath={sim}/audit.log|' "
                    f"{core.DAEMON_CONF} > {sim}/daemon.conf && chmod 600 {sim}/daemon.conf && "
                    f"ln {sim}/src/controller.umockdev {sim}/dev/")
    pid = _ssh(lab, host, f"cd {sim} || exit 1; USBGUARD_UMOCKDEV_DEVICEDIR={sim}/dev nohup "
                          f"umockdev-wrapper usbguard-daemon -k -c {sim}/daemon.conf "
                          f"> {sim}/daemon.log 2>&1 < /dev/null & echo $!").strip()
    assert pid.isdigit(), pid
    try:
        deadline = time.monotonic() + 20
        while lab.ssh(host, "usbguard list-rules").returncode != 0:
            assert time.monotonic() < deadline, _ssh(lab, host, f"cat {sim}/daemon.log")
            time.sleep(0.3)
        yield
    finally:
        lab.ssh(host, f"kill {pid}; for i in $(seq 50); do kill -0 {pid} 2>/dev/null || "
                      "break; sleep 0.1; done; kill -9 " + pid + " 2>/dev/null; true")


def _simulate(lab: LabHandle, host: str, sim: str) -> tuple[list[usbdev.SeenDevice], str, str, str]:
    """Plug every simulated device; USBGuard's verdicts, its event stream, rules, audit file."""
    with _daemon(lab, host, sim):
        # The event stream names the rule that matched each device (rule_id).
        watcher = _ssh(lab, host, f"timeout 60 usbguard watch > {sim}/watch.log 2>&1 "
                                  "< /dev/null & echo $!").strip()
        assert watcher.isdigit(), watcher
        try:
            time.sleep(0.5)
            started = time.monotonic()
            for name in PLUGGED:
                _ssh(lab, host, f"ln {sim}/src/{name}.umockdev {sim}/dev/")
                time.sleep(0.3)
            devices: list[usbdev.SeenDevice] = []
            while time.monotonic() - started < 20:
                devices = usbdev.list_devices(_ssh(lab, host, "usbguard list-devices"))
                if len(devices) == 1 + len(PLUGGED):
                    break
                time.sleep(0.3)
            print(f"usbguard decided on {len(devices)} devices in "
                  f"{time.monotonic() - started:.1f}s")
            time.sleep(0.5)
        finally:
            lab.ssh(host, f"kill {watcher} 2>/dev/null; true")
        return (devices, _ssh(lab, host, f"cat {sim}/watch.log"),
                _ssh(lab, host, "usbguard list-rules"), _ssh(lab, host, f"cat {sim}/audit.log"))


def _by_name(devices: list[usbdev.SeenDevice]) -> dict[tuple[str, str | None], str]:
    return {(d.name, d.serial): d.target for d in devices}


def _agrees(policy: Policy, devices: list[usbdev.SeenDevice]) -> None:
    """baomi's own evaluation of the allow-list gives USBGuard's verdict for every device."""
    for d in devices:
        assert core.decide(policy, d.vendor, d.product, d.serial, d.interfaces).target \
            == d.target, d


def test_usbguard_decides_on_simulated_devices(lab: LabHandle, tmp_path: Path) -> None:
    host = lab.flavour("plain")[1]
    enforcing = _policy_file(tmp_path, "enforcing.yaml", f"  allowed: ['{AUTHORISED}']\n")
    apply(lab, C, limit=[host], policy=enforcing)
    assert check(lab, CHECK, [host], policy=enforcing).returncode == 0
    try:
        devices, _, _, _ = _simulate(lab, host, SIM)
        verdicts = _by_name(devices)
        assert verdicts == {
            ("xHCI Host Controller", "0000:00:14.0"): "allow",
            ("USB Keyboard", "KBD0001"): "allow",                 # never locked out
            ("Cruzer Blade", "4C530001230517109182"): "allow",    # authorised by serial
            ("Cruzer Blade", "4C530009999999999999"): "block",    # same model, other serial
            ("Keyboard with storage", "COMBO0001"): "block",      # HID does not smuggle 08
        }, devices
        _agrees(load(str(enforcing)), devices)

        # Audit-only rollout: the same devices, nothing blocked, the would-blocks named.
        audit = _policy_file(tmp_path, "audit.yaml",
                             f"  audit_only: true\n  allowed: ['{AUTHORISED}']\n")
        assert outcomes(apply(lab, C, limit=[host], policy=audit), C) == {host: "changed"}
        assert check(lab, CHECK, [host], policy=audit).returncode == 0
        devices, watch, rules, audit_log = _simulate(lab, host, SIM + "-audit")
        assert set(_by_name(devices).values()) == {"allow"}, devices
        _agrees(load(str(audit)), devices)
        # The daemon says which rule matched the unauthorised stick: a baomi-would-block rule.
        would = {m[1] for m in re.finditer(r'^(\d+): .*label "baomi-would-block"', rules, re.M)}
        assert would, rules
        events = watch.split("[device] ")
        stick = [e for e in events if e.startswith("PolicyApplied")
                 and '"4C530009999999999999"' in e]
        assert stick and all(re.search(r"rule_id=(\d+)", e)[1] in would  # type: ignore[index]
                             for e in stick), watch
        authorised = [e for e in events if e.startswith("PolicyApplied")
                      and '"4C530001230517109182"' in e]
        assert authorised and not any(re.search(r"rule_id=(\d+)", e)[1] in would  # type: ignore[index]
                                      for e in authorised), watch
        # The audit file records every decision; baomi's evaluation names the would-blocks.
        named = {(d.name, d.serial, dec.label)
                 for d, dec in usbdev.would_block(load(str(audit)),
                                                  usbdev.audited_devices(audit_log))}
        assert named == {("Cruzer Blade", "4C530009999999999999", core.LABEL_WOULD_BLOCK),
                         ("Keyboard with storage", "COMBO0001", core.LABEL_WOULD_BLOCK)}, \
            audit_log
    finally:
        lab.ssh(host, f"rm -rf {SIM} {SIM}-audit")
        apply(lab, C, limit=[host])  # back to the default policy for other tests
