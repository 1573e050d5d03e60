"""usb: the allow-list (rules text and its evaluation) and the parser/compare on output
captured from lab hosts (srv1 plain, srv2 systemd) and from usbguard-daemon (umockdev)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from baomi.controls import usb as core
from baomi.controls import usb_devices as usbdev
from baomi.controls.contract import HostContext, evaluate
from baomi.findings import Finding
from baomi.fixes.usb import install_rules
from baomi.policy import Policy, load_text

DATA = Path(__file__).parent / "data" / "usb"
DEFAULT = load_text("")
# The policies the captures were taken with (usb sections; everything else default).  Those
# before usb.refuse_buses existed are read with it empty; *_buses_* are with the default.
NO_BUSES = "  refuse_buses: []\n"
CAPTURED = load_text("usb:\n" + NO_BUSES)
AUTHORISED = load_text("usb:\n  allowed: ['0781:5567:4C530001230517109182', "
                       "{id: '090c:1000', description: 'Finance \"backup\" disk'}]\n" + NO_BUSES)
AUDIT = load_text("usb:\n  audit_only: true\n  allowed: ['0781:5567:4C530001230517109182']\n"
                  + NO_BUSES)
STICK = ("0781", "5567")
GOOD_SERIAL, OTHER_SERIAL = "4C530001230517109182", "4C530009999999999999"


def desired(policy: Policy, groups: set[str]) -> core.Desired:
    return core.desired(HostContext.of(policy, groups, "srv1"))


SERVERS = desired(CAPTURED, {"servers"})
BUSES = desired(DEFAULT, {"servers"})


def observed(name: str, want: core.Desired = SERVERS) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"), want)


def text(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def test_default_rules_block_storage_and_keep_keyboards() -> None:
    assert core.rule_lines(core.rules(DEFAULT)) == [
        'allow with-interface match-all { 09:*:* } label "baomi-hub"',
        'block with-interface one-of { 08:*:* } label "baomi-block-storage"',
        'allow with-interface match-all { 03:*:* } label "baomi-hid"',
    ]
    assert core.refuses_modules(DEFAULT)
    keyboard = core.decide(DEFAULT, "046d", "c31c", "K1", ("03:01:01", "03:00:00"))
    assert (keyboard.target, keyboard.label) == ("allow", core.LABEL_HID)
    stick = core.decide(DEFAULT, *STICK, GOOD_SERIAL, ("08:06:50",))
    assert (stick.target, stick.label) == ("block", core.LABEL_BLOCK)
    # A "keyboard" that also carries a storage interface is storage.
    combo = core.decide(DEFAULT, "1234", "5678", "C", ("03:01:01", "08:06:50"))
    assert (combo.target, combo.label) == ("block", core.LABEL_BLOCK)
    # Anything else (a webcam, a network adapter): ImplicitPolicyTarget=block.
    assert core.decide(DEFAULT, "5986", "0706", None, ("0e:01:00", "0e:02:00")) == \
        core.Decision("block", core.IMPLICIT)
    assert core.decide(DEFAULT, "1d6b", "0002", None, ("09:00:00",)).target == "allow"


def test_authorised_devices_by_id_and_serial() -> None:
    rules = core.rules(AUTHORISED)
    assert 'allow id 0781:5567 serial "4C530001230517109182" with-interface match-all ' \
           '{ 08:*:* } label "baomi-authorised"\n' in rules
    # A device without a serial in the policy: any serial; the description is a comment.
    assert '# Finance "backup" disk\nallow id 090c:1000 with-interface match-all { 08:*:* }' \
        in rules
    assert core.is_authorised(AUTHORISED, *STICK, GOOD_SERIAL)
    assert not core.is_authorised(AUTHORISED, *STICK, OTHER_SERIAL)
    assert core.is_authorised(AUTHORISED, "090C", "1000", "anything")
    assert not core.is_authorised(DEFAULT, *STICK, GOOD_SERIAL)
    assert core.decide(AUTHORISED, *STICK, GOOD_SERIAL, ("08:06:50",)).target == "allow"
    assert core.decide(AUTHORISED, *STICK, OTHER_SERIAL, ("08:06:50",)).target == "block"
    # An authorised id that also presents a keyboard is not the stick that was authorised.
    assert core.decide(AUTHORISED, *STICK, GOOD_SERIAL, ("08:06:50", "03:01:01")).target \
        == "block"
    # Sticks are authorised: refusing usb-storage would make them useless.
    assert not core.refuses_modules(AUTHORISED)
    assert desired(AUTHORISED, set()).modprobe_conf is None


def test_audit_only_blocks_nothing_and_names_the_would_blocks() -> None:
    lines = core.rule_lines(core.rules(AUDIT))
    assert not any(line.startswith("block") for line in lines)
    assert lines[-1] == 'allow label "baomi-would-block"'
    assert 'allow with-interface one-of { 08:*:* } label "baomi-would-block"' in lines
    stick = core.decide(AUDIT, *STICK, OTHER_SERIAL, ("08:06:50",))
    assert (stick.target, stick.would_block) == ("allow", True)
    webcam = core.decide(AUDIT, "5986", "0706", None, ("0e:01:00",))
    assert (webcam.target, webcam.label) == ("allow", core.LABEL_WOULD_BLOCK)
    assert not core.decide(AUDIT, *STICK, GOOD_SERIAL, ("08:06:50",)).would_block
    assert not core.refuses_modules(AUDIT)


def test_storage_allowed_when_policy_does_not_block() -> None:
    policy = load_text("usb:\n  block_storage: false\n")
    assert 'allow with-interface match-all { 08:*:* } label "baomi-storage-allowed"' in \
        core.rules(policy)
    assert core.decide(policy, *STICK, OTHER_SERIAL, ("08:06:50",)).target == "allow"
    assert not core.refuses_modules(policy)


def test_fresh_hosts_are_reported_with_evidence() -> None:
    seen = observed("fresh_srv1.out")
    assert seen.daemon and seen.loaded is None and not seen.systemd
    assert seen.rules == ""  # Debian's empty rules.conf
    findings = core.compare(SERVERS, seen)
    out = text(findings)
    assert "[R-USB 外部存储设备] modprobe -n -v usb-storage: expected install /bin/false, " \
           "found 'modprobe: FATAL: Module usb-storage not found in directory " in out
    assert "modprobe --showconfig: expected blacklist usb_storage, found no usb_storage/uas " \
           "lines" in out
    assert "/etc/usbguard/rules.conf: expected the policy's allow-list, found missing " \
           "'allow with-interface match-all { 09:*:* } label \"baomi-hub\"'" in out
    assert "/etc/usbguard/usbguard-daemon.conf IPCAllowedGroups: expected root, found root " \
           "plugdev" in out
    assert "/etc/usbguard/usbguard-daemon.conf RuleFolder: expected unset (not a baomi " \
           "setting), found /etc/usbguard/rules.d/" in out
    assert {f.check for f in findings} == {"usb.modprobe_file", "usb.modules_refused",
                                           "usb.rules", "usb.daemon_settings"}
    assert {f.clauses for f in findings if f.check.startswith("usb.modul")} == {("R-USB",)}
    result = evaluate(core.CONTROL, "srv1", SERVERS, seen)
    assert result.not_applicable["usb.modules_loaded"].startswith(
        "the kernel has no loadable modules")
    assert result.not_applicable["usb.service"].startswith("no systemd on this host")
    assert result.status("usb.daemon") == "pass"
    # Debian's package enables the unit; on the systemd host it cannot run (no USB here).
    srv2 = observed("fresh_srv2.out")
    assert srv2.systemd and srv2.enabled == "enabled" and srv2.active == "failed"
    assert not srv2.usb_bus and "usb.service" not in core.skipped(SERVERS, srv2)


def test_applied_hosts_are_compliant() -> None:
    for name in ("applied_srv1.out", "applied_srv2.out"):
        seen = observed(name)
        assert seen.modprobe == {"usb-storage": "install /bin/false",
                                 "uas": "install /bin/false"}
        assert "install usb_storage /bin/false" in seen.showconfig
        assert core.compare(SERVERS, seen) == [], name
    authorised = observed("applied_authorised_srv1.out")
    allowing = desired(AUTHORISED, {"servers"})
    assert core.compare(allowing, authorised) == []
    # Nothing to refuse: the module checks are not applicable, with the reason (and this plain
    # host has no systemd).
    assert set(core.skipped(allowing, authorised)) == {
        "usb.modules_refused", "usb.modules_loaded", "usb.service", "usb.bus_modules_refused",
        "usb.bus_modules_loaded"}
    # The same host against the default policy: storage rules and the refusal differ.
    out = text(core.compare(SERVERS, authorised))
    assert "found extra 'allow id 0781:5567 serial \"4C530001230517109182\"" in out
    assert "modprobe -n -v usb-storage: expected install /bin/false" in out


def test_tampering_is_named() -> None:
    tampered = core.compare(SERVERS, observed("tampered_srv1.out"))
    assert {f.check for f in tampered} == {"usb.rules", "usb.daemon_settings", "usb.file_modes",
                                           "usb.modprobe_file", "usb.modules_refused"}
    out = text(tampered)
    assert "/etc/usbguard/rules.conf: expected the policy's allow-list, found extra 'allow'" \
        in out
    assert "/etc/usbguard/usbguard-daemon.conf ImplicitPolicyTarget: expected block, found " \
           "allow" in out
    assert "/etc/usbguard/usbguard-daemon.conf RuleFolder: expected unset" in out
    assert "/etc/usbguard/rules.conf mode: expected 600 root, found 644 root" in out
    assert "/etc/modprobe.d/baomi-usb-storage.conf: expected the baomi refusal of usb-storage, " \
           "uas, found missing" in out
    disabled = core.compare(SERVERS, observed("disabled_srv2.out"))
    assert [f.check for f in disabled] == ["usb.service"]
    assert [str(f) for f in disabled] == [
        "[R-USB 外部存储设备, R-DEV 禁存个人设备] systemctl is-enabled usbguard: expected "
        "enabled, found disabled"]


def test_rules_are_installed_only_through_usbguards_parser() -> None:
    script = install_rules(core.rules(DEFAULT))
    assert 'usbguard-rule-parser -f "$new"' in script
    assert "chmod 0600" in script and "mv -f \"$new\" /etc/usbguard/rules.conf" in script


def test_usbguard_verdicts_match_baomis_evaluation() -> None:
    """usbguard-daemon's own verdicts (umockdev, deployed rules) equal :func:`core.decide`."""
    devices = usbdev.list_devices((DATA / "list_devices_authorised.out").read_text())
    assert [(d.name, d.serial, d.target) for d in devices] == [
        ("xHCI Host Controller", "0000:00:14.0", "allow"),
        ("USB Keyboard", "KBD0001", "allow"),
        ("Cruzer Blade", GOOD_SERIAL, "allow"),
        ("Cruzer Blade", OTHER_SERIAL, "block"),
        ("Keyboard with storage", "COMBO0001", "block"),
    ]
    assert devices[4].interfaces == ("03:01:01", "08:06:50")
    for d in devices:
        assert core.decide(AUTHORISED, d.vendor, d.product, d.serial, d.interfaces).target \
            == d.target, d


def test_audit_file_read_back() -> None:
    audited = usbdev.audited_devices((DATA / "audit_log_authorised.log").read_text())
    assert {(d.name, d.serial) for d in audited} >= {("Cruzer Blade", OTHER_SERIAL),
                                                      ("USB Keyboard", "KBD0001")}
    blocked = {(d.serial, dec.label) for d, dec in usbdev.would_block(AUTHORISED, audited)}
    assert blocked == {(OTHER_SERIAL, core.LABEL_BLOCK), ("COMBO0001", core.LABEL_BLOCK)}
    assert {d.serial for d, _ in usbdev.would_block(AUDIT, audited)} == {OTHER_SERIAL,
                                                                       "COMBO0001"}


def test_every_removable_bus_is_refused_and_each_driver_named() -> None:
    """*_buses_srv1.out: srv1 before and after `baomi apply --only usb` with the default
    usb.refuse_buses (firewire, thunderbolt, mmc)."""
    assert BUSES.bus_modules == ("firewire-ohci", "firewire-core", "firewire-sbp2",
                                 "thunderbolt", "mmc_block")
    assert "blacklist mmc_block\ninstall mmc_block /bin/false\n" in (BUSES.modprobe_conf or "")
    fresh = core.compare(BUSES, observed("fresh_buses_srv1.out", BUSES))
    named = {f.subject for f in fresh if f.check == "usb.bus_modules_refused"}
    assert named == {f"modprobe -n -v {m}" for m in BUSES.bus_modules}
    assert {f.clauses for f in fresh if f.check == "usb.bus_modules_refused"} == \
        {("R-USB", "R-DEV")}
    applied = observed("applied_buses_srv1.out", BUSES)
    assert applied.bus == {m: "install /bin/false" for m in BUSES.bus_modules}
    assert core.compare(BUSES, applied) == []
    # One bus dropped from the refusal file by hand: that bus's drivers are named.
    edited = replace(applied, bus={**applied.bus, "thunderbolt": "insmod /lib/modules/x/"
                                   "thunderbolt.ko"}, modprobe_file="# edited\n")
    out = text(core.compare(BUSES, edited))
    assert "modprobe -n -v thunderbolt: expected install /bin/false, found 'insmod" in out
    assert "baomi-usb-storage.conf: expected the baomi refusal of usb-storage, uas, " \
           "firewire-ohci" in out
    # Authorised sticks keep usb-storage loadable, but the other buses stay refused.
    allowing = desired(load_text("usb:\n  allowed: ['0781:5567']\n"), {"servers"})
    assert allowing.modprobe_conf is not None and "usb-storage" not in allowing.modprobe_conf
    assert not desired(CAPTURED, set()).bus_modules
