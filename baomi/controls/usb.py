"""R-USB 外部存储设备, R-DEV 禁存个人设备: usb-storage/uas refused, USBGuard allow-list.

The allow-list lives here once, as data (:func:`rule_list`): the USBGuard rules text the deploy
installs and the check compares (:func:`rules`), and the same rules evaluated in Python
(:func:`decide`, :func:`is_authorised`) for the agent, which must tell an authorised stick from
any other without asking the daemon.  Rules are evaluated like USBGuard does: first match wins,
otherwise the implicit target (``ImplicitPolicyTarget=block``).

Audit-only rollout (``usb.audit_only``): USBGuard has no "log only" target, so every rule that
would block is rendered as ``allow`` with the label ``baomi-would-block`` (plus a final
catch-all standing in for the implicit block).  The daemon then allows everything; which rule
matched is in its event stream (``usbguard watch``: ``rule_id``, resolved by
``usbguard list-rules``) and every decision with the device's id, serial and interfaces is in
its audit file (``AuditFilePath``), from which :func:`decide` names the would-block rule.

The kernel modules are refused only when nothing could legitimately need them: with authorised
devices listed, or in audit-only mode, refusing ``usb-storage`` would make every stick
unusable, so USBGuard alone is the gate and the refusal file is removed.

The control contract (:mod:`baomi.controls.contract`): the checks below, in one ``compare``;
the rules install (checked by ``usbguard-rule-parser``) is in :mod:`baomi.fixes.usb`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from baomi import modprobe
from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

MODPROBE = check("usb.modprobe_file", "baomi's refusal file: usb-storage/uas exactly when no "
                 "stick may work, the refused buses' drivers always", ("R-USB",))
MODULES_REFUSED = check("usb.modules_refused", "modprobe resolves usb-storage and uas to "
                        "/bin/false", ("R-USB",))
MODULES_LOADED = check("usb.modules_loaded", "usb-storage and uas are not loaded", ("R-USB",))
DAEMON = check("usb.daemon", "usbguard-daemon is installed")
RULES = check("usb.rules", "USBGuard's rules are the policy's allow-list")
SETTINGS = check("usb.daemon_settings", "usbguard-daemon.conf holds exactly baomi's settings")
FILE_MODES = check("usb.file_modes", "USBGuard's rules and settings are root's alone (600)")
SERVICE_ENABLED = check("usb.service", "the usbguard unit is enabled (systemd hosts)")
BUS_REFUSED = check("usb.bus_modules_refused", "modprobe resolves the storage drivers of "
                    "usb.refuse_buses (firewire, thunderbolt, SD cards) to /bin/false",
                    ("R-USB", "R-DEV"))
BUS_LOADED = check("usb.bus_modules_loaded", "no refused bus driver is loaded", ("R-USB",))
CHECKS = (MODPROBE, MODULES_REFUSED, MODULES_LOADED, DAEMON, RULES, SETTINGS, FILE_MODES,
          SERVICE_ENABLED, BUS_REFUSED, BUS_LOADED)
HEADER = "# Managed by baomi: R-USB 外部存储设备, R-DEV 禁存个人设备. Local edits are reverted.\n"

MODPROBE_FILE = "/etc/modprobe.d/baomi-usb-storage.conf"
RULES_FILE = "/etc/usbguard/rules.conf"
DAEMON_CONF = "/etc/usbguard/usbguard-daemon.conf"
AUDIT_FILE = "/var/log/usbguard/usbguard-audit.log"
MODULES = ("usb-storage", "uas")
# Storage on the other removable buses (usb.refuse_buses): the controller and storage drivers.
BUS_MODULES = {"firewire": ("firewire-ohci", "firewire-core", "firewire-sbp2"),
               "thunderbolt": ("thunderbolt",), "mmc": ("mmc_block",)}
SERVICE = "usbguard"

HUB, HID, STORAGE = "09:*:*", "03:*:*", "08:*:*"
LABEL_HUB = "baomi-hub"
LABEL_HID = "baomi-hid"
LABEL_AUTHORISED = "baomi-authorised"
LABEL_BLOCK = "baomi-block-storage"
LABEL_WOULD_BLOCK = "baomi-would-block"
LABEL_STORAGE_ALLOWED = "baomi-storage-allowed"
IMPLICIT = "implicit"  # the label :func:`decide` reports when no rule matched

# The daemon's settings, complete (the file is written whole).  No RuleFolder: rules.d files
# would be evaluated too, so a drop-in could allow what the policy blocks.  No
# IPCAccessControlFiles: Debian's ':plugdev' file lets plugdev members allow devices.
DAEMON_SETTINGS = (
    ("RuleFile", RULES_FILE),
    ("ImplicitPolicyTarget", "block"),
    ("PresentDevicePolicy", "apply-policy"),
    ("PresentControllerPolicy", "keep"),
    ("InsertedDevicePolicy", "apply-policy"),
    ("AuthorizedDefault", "none"),
    ("RestoreControllerDeviceState", "false"),
    ("DeviceManagerBackend", "uevent"),
    ("IPCAllowedUsers", "root"),
    ("IPCAllowedGroups", "root"),
    ("DeviceRulesWithPort", "false"),
    ("AuditBackend", "FileAudit"),
    ("AuditFilePath", AUDIT_FILE),
    ("HidePII", "false"),
)


@dataclass(frozen=True)
class Rule:
    """One USBGuard rule of the allow-list (only the attributes baomi uses)."""

    target: str                      # allow | block
    label: str
    interfaces: tuple[str, ...] = ()  # class patterns "cc:*:*"
    operator: str = "match-all"      # match-all: every interface in the set; one-of: any
    device_id: str | None = None     # "vendor:product"
    serial: str | None = None
    comment: str = ""

    def render(self) -> str:
        parts = [self.target]
        if self.device_id:
            parts.append(f"id {self.device_id}")
        if self.serial is not None:
            parts.append(f'serial "{self.serial}"')
        if self.interfaces:
            parts.append(f"with-interface {self.operator} {{ {' '.join(self.interfaces)} }}")
        parts.append(f'label "{self.label}"')
        return " ".join(parts)

    def matches(self, vendor: str, product: str, serial: str | None,
                interfaces: tuple[str, ...]) -> bool:
        if self.device_id and self.device_id != f"{vendor.lower()}:{product.lower()}":
            return False
        if self.serial is not None and self.serial != serial:
            return False
        if self.interfaces:
            hit = [any(_interface_matches(p, i) for p in self.interfaces) for i in interfaces]
            if self.operator == "match-all" and not (hit and all(hit)):
                return False
            if self.operator == "one-of" and not any(hit):
                return False
        return True


def _interface_matches(pattern: str, interface: str) -> bool:
    """USBGuard interface types: "cc:ss:pp", "*" matching any subclass/protocol."""
    return all(p == "*" or p.lower() == i.lower()
               for p, i in zip(pattern.split(":"), interface.split(":"), strict=False))


def _comment(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def rule_list(policy: Policy) -> tuple[Rule, ...]:
    """The allow-list in evaluation order (first match wins; no match: implicit block)."""
    u = policy.usb
    audit = u.audit_only
    out = [Rule("allow", LABEL_HUB, (HUB,), comment="hubs (every interface a hub)")]
    if u.block_storage:
        for dev in u.allowed:
            what = _comment(dev.description) or "authorised storage"
            out.append(Rule("allow", LABEL_AUTHORISED, (STORAGE,), device_id=dev.id,
                            serial=dev.serial, comment=what))
        out.append(Rule("allow" if audit else "block",
                        LABEL_WOULD_BLOCK if audit else LABEL_BLOCK, (STORAGE,), "one-of",
                        comment="any other device with a mass-storage interface, composite "
                                "keyboards included"))
    else:
        out.append(Rule("allow", LABEL_STORAGE_ALLOWED, (STORAGE,),
                        comment="usb.block_storage is false: storage-only devices allowed"))
    if u.allow_hid:
        out.append(Rule("allow", LABEL_HID, (HID,),
                        comment="keyboards and mice (every interface HID): never locked out"))
    if audit:
        out.append(Rule("allow", LABEL_WOULD_BLOCK,
                        comment="audit-only: stands in for ImplicitPolicyTarget=block"))
    return tuple(out)


def rules(policy: Policy) -> str:
    """The exact /etc/usbguard/rules.conf for the policy."""
    mode = "audit-only: nothing is blocked, would-block rules are labelled " \
        f"{LABEL_WOULD_BLOCK}" if policy.usb.audit_only else "enforcing"
    lines = [HEADER.rstrip("\n"), f"# {mode}"]
    for rule in rule_list(policy):
        lines += [f"# {rule.comment}", rule.render()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Decision:
    target: str          # what USBGuard does with the device: allow | block
    label: str           # the matching rule's label, or IMPLICIT

    @property
    def would_block(self) -> bool:
        """True when the device is (or, in audit-only mode, would be) blocked."""
        return self.target == "block" or self.label == LABEL_WOULD_BLOCK


def decide(policy: Policy, vendor: str, product: str, serial: str | None,
           interfaces: tuple[str, ...]) -> Decision:
    """What the deployed rules do with a device (interfaces as "cc:ss:pp" strings)."""
    for rule in rule_list(policy):
        if rule.matches(vendor, product, serial, interfaces):
            return Decision(rule.target, rule.label)
    return Decision("block", IMPLICIT)


def is_authorised(policy: Policy, vendor: str, product: str, serial: str | None) -> bool:
    """Is this storage device on the policy's allow-list (vendor:product, and serial if given)?"""
    device_id = f"{vendor.lower()}:{product.lower()}"
    return any(d.id == device_id and (d.serial is None or d.serial == serial)
               for d in policy.usb.allowed)


def refuses_modules(policy: Policy) -> bool:
    """usb-storage/uas refused only where no stick may work at all (see the module docstring)."""
    u = policy.usb
    return u.block_storage and not u.audit_only and not u.allowed


def bus_modules(policy: Policy) -> tuple[str, ...]:
    return tuple(m for bus in policy.usb.refuse_buses for m in BUS_MODULES[bus])


def modprobe_conf(refuse: bool, buses: tuple[str, ...]) -> str | None:
    """The refusal file: usb-storage/uas when ``refuse``, the buses' drivers always; None when
    nothing is refused (the file must then be absent)."""
    if not refuse and not buses:
        return None
    body = modprobe.refusal(MODULES) if refuse else ""
    if buses:
        body += "# usb.refuse_buses: " + ", ".join(buses) + "\n" + modprobe.refusal(buses)
    return HEADER + body


def daemon_conf() -> str:
    return HEADER + "".join(f"{k}={v}\n" for k, v in DAEMON_SETTINGS)


@dataclass(frozen=True)
class Desired:
    refuse_modules: bool
    modprobe_conf: str | None   # None: baomi's refusal file must be absent
    rules: str
    daemon_conf: str
    audit_only: bool
    bus_modules: tuple[str, ...] = ()


def desired(ctx: HostContext) -> Desired:
    policy = ctx.policy
    refuse = refuses_modules(policy)
    buses = bus_modules(policy)
    return Desired(refuse_modules=refuse, modprobe_conf=modprobe_conf(refuse, buses),
                   rules=rules(policy), daemon_conf=daemon_conf(),
                   audit_only=policy.usb.audit_only, bus_modules=buses)


def observe_script(want: Desired) -> str:
    return script({
        "daemon": "command -v usbguard-daemon",
        "modprobe_file": cat(MODPROBE_FILE),
        **modprobe.resolve_commands(MODULES + want.bus_modules),
        "bus_loaded": modprobe.loaded_command(want.bus_modules) if want.bus_modules else "true",
        # modprobe prints module names with underscores.
        "showconfig": "modprobe --showconfig "
                      "| grep -E '^(blacklist|install) (usb_storage|uas)( |$)'",
        "loaded": "if [ -e /proc/modules ]; then grep -E '^(usb_storage|uas) ' /proc/modules "
                  "|| echo none; else echo no-modules; fi",
        "rules": cat(RULES_FILE),
        "conf": cat(DAEMON_CONF),
        "modes": f"stat -c '%n %a %U' {RULES_FILE} {DAEMON_CONF}",
        "systemd": "[ -d /run/systemd/system ] && echo yes || echo no",
        "enabled": f"systemctl is-enabled {SERVICE}",
        "active": f"systemctl is-active {SERVICE}",
        "usb_bus": "[ -d /sys/bus/usb ] && echo present || echo absent",
    })


@dataclass(frozen=True)
class Observed:
    daemon: bool
    modprobe_file: str | None
    modprobe: dict[str, str]          # module -> `modprobe -n -v` output (stdout+stderr)
    showconfig: tuple[str, ...]
    loaded: tuple[str, ...] | None    # None: the kernel has no loadable modules
    rules: str | None
    conf: str | None
    modes: dict[str, str]             # path -> "600 root"
    systemd: bool
    enabled: str
    active: str
    usb_bus: bool
    bus: dict[str, str] = field(default_factory=dict)   # bus driver -> `modprobe -n -v`
    bus_loaded: tuple[str, ...] | None = None


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    text = sec.text

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out.strip() if s is not None else ""

    loaded_out = raw("loaded")
    loaded = None if loaded_out == "no-modules" else tuple(
        line.split()[0] for line in loaded_out.splitlines() if line.strip() not in ("", "none"))
    modes = {}
    for line in raw("modes").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("/"):
            modes[parts[0]] = f"{parts[1]} {parts[2]}"
    return Observed(
        daemon=text("daemon") is not None,
        modprobe_file=text("modprobe_file"),
        modprobe={m: raw(modprobe.section(m)) for m in MODULES},
        bus={m: raw(modprobe.section(m)) for m in want.bus_modules},
        bus_loaded=modprobe.parse_loaded(raw("bus_loaded")),
        showconfig=tuple(line.strip() for line in raw("showconfig").splitlines() if line.strip()),
        loaded=loaded,
        rules=text("rules"),
        conf=text("conf"),
        modes=modes,
        systemd=raw("systemd") == "yes",
        enabled=raw("enabled"),
        active=raw("active"),
        usb_bus=raw("usb_bus") == "present",
    )


def settings(conf: str) -> dict[str, str]:
    """usbguard-daemon.conf as key → value (comments and blank lines ignored)."""
    out = {}
    for line in conf.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def rule_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _short(text: str, limit: int = 160) -> str:
    one = " | ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())
    return repr(one if len(one) <= limit else one[:limit] + "…")


def _modules(want: Desired, seen: Observed) -> list[Finding]:
    """R-USB: the usb-storage/uas refusal, as modprobe resolves it."""
    findings: list[Finding] = []
    if seen.modprobe_file != want.modprobe_conf:
        if want.modprobe_conf is None:
            findings.append(MODPROBE.finding(MODPROBE_FILE, "absent (authorised devices listed "
                                             "or audit-only: sticks must be able to load "
                                             "usb-storage)", "present", "medium"))
        else:
            refused = (MODULES if want.refuse_modules else ()) + want.bus_modules
            findings.append(MODPROBE.finding(
                MODPROBE_FILE, "the baomi refusal of " + ", ".join(refused),
                "missing" if seen.modprobe_file is None else "edited content"))
    for module, found in modprobe.not_refused(seen.bus).items():
        findings.append(BUS_REFUSED.finding(f"modprobe -n -v {module}", modprobe.REFUSED,
                                            _short(found), "critical"))
    for module in seen.bus_loaded or ():
        findings.append(BUS_LOADED.finding(f"kernel module {module}", "not loaded", "loaded",
                                           "critical"))
    if not want.refuse_modules:
        return findings
    for module, out in seen.modprobe.items():
        if "install /bin/false" not in out:
            findings.append(MODULES_REFUSED.finding(f"modprobe -n -v {module}",
                                                    "install /bin/false",
                                                    _short(out) if out else "no output",
                                                    "critical"))
    for module in ("usb_storage", "uas"):
        for line in (f"blacklist {module}", f"install {module} /bin/false"):
            if line not in seen.showconfig:
                findings.append(MODULES_REFUSED.finding(
                    "modprobe --showconfig", line,
                    _short("\n".join(seen.showconfig)) if seen.showconfig
                    else "no usb_storage/uas lines"))
    for module in seen.loaded or ():
        findings.append(MODULES_LOADED.finding(f"kernel module {module}", "not loaded", "loaded",
                                               "critical"))
    return findings


def _usbguard(want: Desired, seen: Observed) -> list[Finding]:
    """R-USB, R-DEV: the daemon installed, its rules and settings equal the policy's."""
    findings: list[Finding] = []
    if not seen.daemon:
        findings.append(DAEMON.finding("usbguard-daemon", "installed", "not installed",
                                       "critical"))
    if seen.rules is None:
        findings.append(RULES.finding(RULES_FILE, "the policy's allow-list", "missing",
                                      "critical"))
    elif seen.rules != want.rules:
        have, need = rule_lines(seen.rules), rule_lines(want.rules)
        extra = [r for r in have if r not in need]
        missing = [r for r in need if r not in have]
        parts = ([f"extra {_short(r, 120)}" for r in extra]
                 + [f"missing {_short(r, 120)}" for r in missing])
        findings.append(RULES.finding(RULES_FILE, "the policy's allow-list",
                                      "; ".join(parts[:4]) if parts else "rules reordered or "
                                      "comments edited", "critical" if extra else "high"))
    if seen.conf is None:
        findings.append(SETTINGS.finding(DAEMON_CONF, "baomi's daemon settings", "missing"))
    else:
        have_s = settings(seen.conf)
        for key, value in DAEMON_SETTINGS:
            if have_s.get(key) != value:
                findings.append(SETTINGS.finding(f"{DAEMON_CONF} {key}", value,
                                                 have_s.get(key, "unset")))
        for key in sorted(set(have_s) - {k for k, _ in DAEMON_SETTINGS}):
            findings.append(SETTINGS.finding(f"{DAEMON_CONF} {key}",
                                             "unset (not a baomi setting)", have_s[key]))
    for path in (RULES_FILE, DAEMON_CONF):
        mode = seen.modes.get(path)
        if mode is not None and mode != "600 root":
            findings.append(FILE_MODES.finding(f"{path} mode", "600 root", mode, "medium"))
    if seen.systemd and seen.enabled != "enabled":
        findings.append(SERVICE_ENABLED.finding(f"systemctl is-enabled {SERVICE}", "enabled",
                                                seen.enabled or "no answer"))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return _modules(want, seen) + _usbguard(want, seen)


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """Checks with nothing to look at on this host, and why (shown in reports)."""
    reasons = {}
    if not want.refuse_modules:
        why = ("the policy lists authorised devices or is audit-only: usb-storage must stay "
               "loadable, USBGuard alone is the gate")
        reasons.update({MODULES_REFUSED.id: why, MODULES_LOADED.id: why})
    elif seen.loaded is None:
        reasons[MODULES_LOADED.id] = ("the kernel has no loadable modules (/proc/modules "
                                      "absent), so usb-storage cannot be loaded at all")
    if not want.bus_modules:
        why = "usb.refuse_buses is empty"
        reasons.update({BUS_REFUSED.id: why, BUS_LOADED.id: why})
    elif seen.bus_loaded is None:
        reasons[BUS_LOADED.id] = ("the kernel has no loadable modules (/proc/modules absent): "
                                  "no bus driver can be loaded")
    if not seen.systemd:
        reasons[SERVICE_ENABLED.id] = ("no systemd on this host; rules installed, the daemon "
                                       "is not managed here")
    return reasons


CONTROL: Control[Desired, Observed] = Control(
    "usb", CHECKS, desired, observe_script, parse, compare, skipped=skipped)
