"""R-SEC 防火墙: nftables default-deny inbound, except SSH and the policy's allowed services.

The control contract (:mod:`baomi.controls.contract`): ``desired`` (host context → the ruleset
file and the input chain's rules), ``observe_script`` (read-only commands), ``parse`` (→
:class:`Observed`, from ``nft -j list ruleset``), ``compare`` (→ findings of the checks below).
``deploy/firewall.py``, ``checks/test_firewall.py`` and the agent run them; the validated load is
in :mod:`baomi.fixes.firewall`.

baomi owns one table, ``inet baomi_filter``.  Its file declares, deletes and redefines the table,
so ``nft -f`` replaces it in one transaction (never a moment without rules, never half a
ruleset) and leaves other tables (a container runtime's) alone.  A packet must pass every base
chain on the input hook, so an ``accept`` in another table cannot open what ours drops.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

LOADED = check("firewall.loaded", "baomi's table is loaded: input hook, policy drop")
OPEN_PORTS = check("firewall.open_ports", "inbound ports accepted exactly as the policy allows")
RULES = check("firewall.rules", "the input chain holds exactly the policy's rules, in order")
CONF_FILE = check("firewall.conf", "the ruleset file loaded at boot is baomi's, unedited")
BOOT_SERVICE = check("firewall.boot_service", "nftables.service loads the ruleset at boot")
CHECKS = (LOADED, OPEN_PORTS, RULES, CONF_FILE, BOOT_SERVICE)
TABLE = "baomi_filter"
FAMILY = "inet"
CHAIN = "input"
CONF = "/etc/nftables.conf"
SERVICE = "nftables.service"
COLLECTOR_GROUP = "collector"
HEADER = "# Managed by baomi: R-SEC 防火墙与入侵检测. Local edits are reverted.\n"

BASE_RULES = (
    "ct state invalid drop",
    "ct state established,related accept",
    'iif "lo" accept',
    # Numbers, not names: minimal hosts have no /etc/protocols (nft then cannot resolve names).
    "meta l4proto { 1, 58 } accept",
)
REJECT_RULE = "reject with icmpx admin-prohibited"
# nft prints protocol numbers as names where /etc/protocols exists.
_DENIED = {"drop": "dropped", "reject": "rejected"}
_L4PROTO = {"icmp": "1", "ipv6-icmp": "58", "icmpv6": "58", "tcp": "6", "udp": "17"}


@dataclass(frozen=True)
class Service:
    """Inbound traffic the firewall accepts: ``proto``/``port`` from ``sources`` (() = anywhere)."""

    proto: str
    port: int
    sources: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = ", ".join(self.sources) if self.sources else "anywhere"
        return f"{self.proto}/{self.port} from {where}"


@dataclass(frozen=True)
class Desired:
    enabled: bool
    default_inbound: str
    services: tuple[Service, ...]
    rules: tuple[str, ...]
    conf: str
    ssh_port: int
    ssh_sources: tuple[str, ...]


def _address(network: str) -> str:
    """nft prints a single host without its /32 or /128."""
    net = ipaddress.ip_network(network, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _sort_key(item: str) -> tuple[int, Any, int]:
    net = ipaddress.ip_network(item, strict=False)
    return (net.version, net.network_address, net.prefixlen)


def _values(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def service_rules(s: Service) -> list[str]:
    """The input-chain rules accepting one service, one per address family that has sources."""
    match = f"{s.proto} dport {s.port} accept"
    if not s.sources:
        return [match]
    out = []
    for version, selector in ((4, "ip saddr"), (6, "ip6 saddr")):
        nets = sorted((n for n in s.sources if ipaddress.ip_network(n).version == version),
                      key=_sort_key)
        if nets:
            out.append(f"{selector} {_values([_address(n) for n in nets])} {match}")
    return out


def _comment(text: str) -> str:
    return "# " + re.sub(r"\s+", " ", text).strip() if text.strip() else ""


def desired(ctx: HostContext) -> Desired:
    policy = ctx.policy
    f = policy.firewall
    labelled: list[tuple[Service, str]] = [
        (Service("tcp", f.ssh_port, f.ssh_sources), "SSH: IT's administrative access")]
    if COLLECTOR_GROUP in ctx.groups:
        labelled.append((Service("tcp", policy.collector.listen_port),
                         "baomi collector: agents ship here"))
    lf = policy.log_forwarding
    if lf.enabled and lf.host and ctx.host == lf.host:
        labelled.append((Service("tcp", lf.port),
                         "R-LOG log host: hosts forward their logs here (syslog over TLS)"))
    automatic = {s for s, _ in labelled}
    labelled += [(Service(r.proto, r.port, r.sources), r.comment) for r in f.allow
                 if Service(r.proto, r.port, r.sources) not in automatic]
    rules = list(BASE_RULES)
    body = [f"\t\t{r}" for r in BASE_RULES]
    for service, comment in labelled:
        lines = service_rules(service)
        rules += lines
        if _comment(comment):
            body.append(f"\t\t{_comment(comment)}")
        body += [f"\t\t{r}" for r in lines]
    if f.default_inbound == "reject":
        rules.append(REJECT_RULE)
        body.append(f"\t\t{REJECT_RULE}")
    conf = (
        "#!/usr/sbin/nft -f\n" + HEADER
        + f"# Only table {FAMILY} {TABLE} is replaced, in one transaction; other tables stay.\n"
        f"table {FAMILY} {TABLE}\n"
        f"delete table {FAMILY} {TABLE}\n\n"
        f"table {FAMILY} {TABLE} {{\n"
        f"\tchain {CHAIN} {{\n"
        "\t\ttype filter hook input priority filter; policy drop;\n"
        + "\n".join(body) + "\n"
        "\t}\n"
        "}\n"
    )
    return Desired(enabled=f.enabled, default_inbound=f.default_inbound,
                   services=tuple(s for s, _ in labelled), rules=tuple(rules), conf=conf,
                   ssh_port=f.ssh_port, ssh_sources=f.ssh_sources)


def observe_script(want: Desired) -> str:
    commands = {
        "nft": "nft -j list ruleset",
        "conf": cat(CONF),
        "service": f"if [ -d /run/systemd/system ]; then systemctl is-enabled {SERVICE}; "
                   "else echo no-systemd; fi",
        # Without systemd: is there an init at all that could load the ruleset at boot?
        "init": "cat /proc/1/comm",
        # Where the observing SSH session comes from (empty when the agent runs locally).
        "ssh_client": "echo \"${SSH_CLIENT%% *}\"",
        "sshd_ports": "sshd -T 2>/dev/null | awk '$1 == \"port\" {print $2}'",
    }
    return script(commands)


@dataclass(frozen=True)
class Rule:
    """One rule of our input chain, rendered as nft prints it, and the service it accepts."""

    text: str
    service: Service | None


@dataclass(frozen=True)
class Observed:
    nft_error: str | None
    table: bool
    hook: str | None
    policy: str | None
    rules: tuple[Rule, ...]
    conf: str | None
    service: str | None
    ssh_client: str | None
    sshd_ports: tuple[int, ...]
    init: str | None = None  # PID 1's name

    @property
    def accepted(self) -> tuple[Service, ...]:
        return tuple(r.service for r in self.rules if r.service is not None)


def _render_left(left: dict[str, Any]) -> str:
    if "payload" in left:
        return f"{left['payload'].get('protocol', '?')} {left['payload'].get('field', '?')}"
    if "meta" in left:
        key = left["meta"].get("key", "?")
        return key if key in ("iif", "oif", "iifname", "oifname") else f"meta {key}"
    if "ct" in left:
        return f"ct {left['ct'].get('key', '?')}"
    return json.dumps(left, sort_keys=True)


def _render_value(value: Any, left: str) -> str:
    if isinstance(value, dict):
        if "set" in value:
            items = [_render_value(v, left) for v in value["set"]]
            try:
                items.sort(key=_sort_key)
            except ValueError:
                items.sort(key=lambda v: (len(v), v) if v.isdigit() else (0, v))
            return _values(items) if len(items) > 1 else "{ " + items[0] + " }"
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            return "-".join(str(v) for v in value["range"])
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    text = str(value)
    if left == "meta l4proto":
        return _L4PROTO.get(text, text)
    if left in ("iif", "oif", "iifname", "oifname"):
        return f'"{text}"'
    return text


def _render_expr(expr: dict[str, Any]) -> str:
    key, value = next(iter(expr.items()))
    if key == "match":
        left = _render_left(value.get("left", {}))
        op = value.get("op", "==")
        shown_op = "" if op in ("==", "in") else f"{op} "
        return f"{left} {shown_op}{_render_value(value.get('right'), left)}"
    if key in ("jump", "goto") and isinstance(value, dict):
        return f"{key} {value.get('target', '?')}"
    if key == "reject":
        if isinstance(value, dict) and value.get("type"):
            return f"reject with {value['type']} {value.get('expr', '')}".strip()
        return "reject"
    return key  # accept, drop, counter, log, ...


def _service(exprs: list[dict[str, Any]]) -> Service | None:
    """The service an accepting rule opens: its dport match and its source addresses."""
    if not exprs or "accept" not in exprs[-1]:
        return None
    proto, port, sources = None, None, []
    for e in exprs:
        m = e.get("match")
        if not isinstance(m, dict) or m.get("op", "==") not in ("==", "in"):
            continue
        payload = m.get("left", {}).get("payload", {})
        right = m.get("right")
        if payload.get("field") == "dport" and isinstance(right, int):
            proto, port = payload.get("protocol"), right
        elif payload.get("field") == "saddr":
            for item in (right["set"] if isinstance(right, dict) and "set" in right else [right]):
                if isinstance(item, dict) and "prefix" in item:
                    sources.append(f"{item['prefix']['addr']}/{item['prefix']['len']}")
                else:
                    sources.append(str(item))
    if proto is None or port is None:
        return None
    return Service(str(proto), port, tuple(sorted((_address(s) for s in sources),
                                                  key=_sort_key)))


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)
    nft = sec.get("nft")
    error = None
    objects: list[dict[str, Any]] = []
    if nft is None or not nft.ok:
        error = (nft.out.strip()[-300:] if nft is not None else "") or "nft did not run"
    else:
        try:
            objects = json.loads(nft.out).get("nftables", [])
        except (ValueError, AttributeError):
            error = f"nft -j printed no JSON: {nft.out.strip()[:120]!r}"
    table = hook = policy = None
    rules = []
    for obj in objects:
        if "table" in obj and obj["table"].get("family") == FAMILY \
                and obj["table"].get("name") == TABLE:
            table = True
        item = obj.get("chain") or obj.get("rule")
        if not isinstance(item, dict) or item.get("family") != FAMILY \
                or item.get("table") != TABLE:
            continue
        if "chain" in obj and item.get("name") == CHAIN:
            hook, policy = item.get("hook"), item.get("policy")
        elif "rule" in obj and item.get("chain") == CHAIN:
            exprs = item.get("expr", [])
            rules.append(Rule(" ".join(_render_expr(e) for e in exprs), _service(exprs)))
    ports = []
    sshd_ports = sec.get("sshd_ports")
    for line in (sshd_ports.out if sshd_ports is not None else "").split():
        if line.isdigit():
            ports.append(int(line))
    conf = sec.get("conf")
    service = sec.get("service")
    client = sec.get("ssh_client")
    init = sec.text("init")
    return Observed(
        nft_error=error,
        table=bool(table),
        hook=hook,
        policy=policy,
        rules=tuple(rules),
        conf=conf.out if conf is not None and conf.ok else None,
        service=service.out.strip() or None if service is not None else None,
        ssh_client=(client.out.strip() or None) if client is not None else None,
        sshd_ports=tuple(ports),
        init=(init.strip() or None) if init is not None else None,
    )


def _ruleset(want: Desired, seen: Observed) -> list[Finding]:
    """How the loaded ruleset differs from the policy."""
    where = f"{FAMILY} {TABLE} {CHAIN}"
    if seen.nft_error:
        return [LOADED.finding("nftables ruleset", "readable with nft (nf_tables in the kernel)",
                               seen.nft_error, "critical")]
    if not seen.table:
        return [LOADED.finding(f"table {FAMILY} {TABLE}", "loaded, default-deny inbound",
                               "not loaded: nothing filters inbound connections", "critical")]
    findings = []
    if seen.hook != "input" or seen.policy != "drop":
        findings.append(LOADED.finding(
            f"chain {where}", "hook input, policy drop",
            f"hook {seen.hook or 'none'}, policy {seen.policy or 'none'}", "critical"))
    seen_texts = [r.text for r in seen.rules]
    by_port = {(s.proto, s.port): s for s in want.services}
    for rule in seen.rules:
        if rule.text in want.rules:
            continue
        if rule.service is not None:
            allowed = by_port.get((rule.service.proto, rule.service.port))
            expected = (f"accepted only from {', '.join(allowed.sources) or 'anywhere'}"
                        if allowed else f"{_DENIED[want.default_inbound]} (the policy "
                        "allows no such port)")
            findings.append(OPEN_PORTS.finding(
                f"inbound {rule.service.proto}/{rule.service.port}", expected,
                f"accepted from {', '.join(rule.service.sources) or 'anywhere'} "
                f"by rule '{rule.text}'", "critical"))
        else:
            findings.append(RULES.finding(f"rule in {where}", "absent (not in the policy)",
                                          f"'{rule.text}'", "critical"))
    for text in want.rules:
        if text not in seen_texts:
            services = [s for s in want.services if text in service_rules(s)]
            if services:
                findings.append(OPEN_PORTS.finding(
                    f"inbound {services[-1].proto}/{services[-1].port}", f"'{text}'", "missing"))
            else:
                findings.append(RULES.finding(f"rule in {where}", f"'{text}'", "missing"))
    if not findings and tuple(seen_texts) != want.rules:
        findings.append(RULES.finding(f"rule order in {where}", " | ".join(want.rules),
                                      " | ".join(seen_texts)))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    if not want.enabled:
        return []
    findings = _ruleset(want, seen)
    if seen.conf != want.conf:
        findings.append(CONF_FILE.finding(CONF, "the baomi ruleset (loaded at boot)",
                                          "missing" if seen.conf is None else "edited content",
                                          "medium"))
    if seen.service not in (None, "no-systemd", "enabled"):
        findings.append(BOOT_SERVICE.finding(SERVICE, "enabled (loads the ruleset at boot)",
                                             seen.service, "medium"))
    if seen.service == "no-systemd" and seen.init in INIT_SYSTEMS:
        findings.append(BOOT_SERVICE.finding(
            CONF, "loaded at boot", f"PID 1 is {seen.init}, not systemd: baomi has no boot "
            "step for it, so the ruleset is lost at reboot until the next apply", "medium"))
    return findings


# PID 1 names of init systems other than systemd: they run boot scripts, but baomi installs
# none for them (yet), so the ruleset would be lost on reboot: a finding, not a skip.
INIT_SYSTEMS = frozenset({"init", "runit", "runit-init", "openrc-init", "s6-svscan", "dinit"})


def lockout_risk(want: Desired, seen: Observed) -> str | None:
    """Why loading the ruleset would cut IT off from the host (None when it is safe)."""
    if seen.sshd_ports and want.ssh_port not in seen.sshd_ports:
        return (f"firewall.ssh_port is {want.ssh_port} but sshd listens on "
                f"{', '.join(map(str, seen.sshd_ports))}: new SSH logins would be dropped")
    if want.ssh_sources and seen.ssh_client:
        try:
            client = ipaddress.ip_address(seen.ssh_client)
        except ValueError:
            return None
        if not any(client in ipaddress.ip_network(n) for n in want.ssh_sources):
            return (f"this SSH session comes from {client}, outside firewall.ssh_from "
                    f"({', '.join(want.ssh_sources)}): the next login would be dropped")
    return None


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "policy: firewall.enabled is false"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    """The rule checks cannot be judged without our table; the boot unit without systemd."""
    reasons = {}
    if seen.nft_error or not seen.table:
        why = f"the ruleset could not be read or {FAMILY} {TABLE} is not loaded (see {LOADED.id})"
        reasons.update({OPEN_PORTS.id: why, RULES.id: why})
    if seen.service is None:
        reasons[BOOT_SERVICE.id] = "systemctl gave no answer"
    elif seen.service == "no-systemd" and seen.init not in INIT_SYSTEMS:
        reasons[BOOT_SERVICE.id] = (
            f"no init system on this host (PID 1 is {seen.init or 'unknown'}): nothing on it "
            "runs at boot, so no file of it can load the ruleset; whoever starts the host "
            f"must load {CONF} (baomi apply loads it now)")
    return reasons


CONTROL: Control[Desired, Observed] = Control(
    "firewall", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped)
