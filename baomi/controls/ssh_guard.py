"""R-SEC 入侵检测: fail2ban bans an address after repeated failed SSH logins.

Why fail2ban and not an nftables rate limit: a rate limit counts connections, not failures;
the controller opens many SSH connections per apply and would be throttled like a guesser,
while a guesser who stays under the rate is never stopped.  fail2ban reads sshd's own
verdicts (``/var/log/auth.log``, written by rsyslog), bans only addresses that failed
``max_retry`` times within ``find_time_minutes``, through its own nftables table
(``banaction = nftables-multiport``, next to baomi's ``inet baomi_filter``), and never bans
``ignore`` (e.g. the controller).

The jail file is written whole; the check also asks the running fail2ban for the jail's
values, so a later ``jail.local`` that overrides them is seen.  Hosts without systemd are not
applicable: nothing there keeps fail2ban running.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

CONFIG = check("ssh_guard.config", "baomi's sshd jail file is in place")
RUNNING = check("ssh_guard.running", "fail2ban is enabled and running")
JAIL = check("ssh_guard.jail", "the running sshd jail bans after the policy's failures")
CHECKS = (CONFIG, RUNNING, JAIL)
HEADER = "# Managed by baomi: R-SEC 入侵检测. Local edits are reverted.\n"
JAIL_FILE = "/etc/fail2ban/jail.d/baomi-sshd.local"
SERVICE = "fail2ban"
AUTH_LOG = "/var/log/auth.log"  # rsyslog's (Debian's python3 has no journal module for it)


@dataclass(frozen=True)
class Desired:
    enabled: bool
    jail: str
    values: tuple[tuple[str, str], ...]   # fail2ban-client get sshd KEY -> value


def desired(ctx: HostContext) -> Desired:
    g = ctx.policy.ssh_guard
    ignore = " ".join(("127.0.0.1/8", "::1", *g.ignore))
    jail = (HEADER + f"[sshd]\nenabled = true\nbackend = auto\nlogpath = {AUTH_LOG}\n"
            f"port = {ctx.policy.firewall.ssh_port}\n"
            f"maxretry = {g.max_retry}\nfindtime = {g.find_time_minutes * 60}\n"
            f"bantime = {g.ban_minutes * 60}\nbanaction = nftables-multiport\n"
            f"ignoreip = {ignore}\n")
    values = (("maxretry", str(g.max_retry)), ("findtime", str(g.find_time_minutes * 60)),
              ("bantime", str(g.ban_minutes * 60)))
    return Desired(g.enabled, jail, values)


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "ssh_guard.enabled is false in the policy"


def observe_script(want: Desired) -> str:
    # The jail's values count only when fail2ban is active (compare); where it is not (or
    # there is no systemd) each fail2ban-client would start Python just to fail (~0.1 s CPU).
    gets = {f"get_{key}": f"systemctl is-active --quiet {SERVICE} || exit 3; "
                          f"fail2ban-client get sshd {key}" for key, _ in want.values}
    return script({
        "systemd": "[ -d /run/systemd/system ] && echo yes || echo no",
        "jail": cat(JAIL_FILE),
        "service": f"systemctl is-enabled {SERVICE}; systemctl is-active {SERVICE}",
        "status": "fail2ban-client status sshd",
        **gets,
    })


@dataclass(frozen=True)
class Observed:
    systemd: bool
    jail: str | None
    service: str
    status: tuple[int, str]
    values: dict[str, str]


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out.strip() if s is not None else ""

    status = sec.get("status")
    return Observed(raw("systemd") == "yes", sec.text("jail"), " ".join(raw("service").split()),
                    (status.rc if status else 1, raw("status")),
                    {key: raw(f"get_{key}") for key, _ in want.values})


def compare(want: Desired, seen: Observed) -> list[Finding]:
    if not seen.systemd:
        return []
    out = []
    if seen.jail != want.jail:
        out.append(CONFIG.finding(JAIL_FILE, "baomi's jail",
                                  "missing" if seen.jail is None else "edited"))
    if seen.service != "enabled active":
        out.append(RUNNING.finding(f"systemctl {SERVICE}", "enabled active",
                                   seen.service or "no answer", "critical"))
    elif seen.status[0] != 0:
        out.append(JAIL.finding("fail2ban-client status sshd", "the sshd jail running",
                                seen.status[1][-200:] or "no answer", "critical"))
    else:
        for key, value in want.values:
            if seen.values.get(key) != value:
                out.append(JAIL.finding(f"sshd jail {key}", value, seen.values.get(key) or "?"))
    return out


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    if seen.systemd:
        return {}
    why = "no systemd on this host: nothing keeps fail2ban running"
    return {c.id: why for c in CHECKS}


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    lines = [ln.strip(" |`-") for ln in seen.status[1].splitlines() if "ban" in ln.lower()]
    return {JAIL.id: "; ".join(lines)} if lines else {}


CONTROL: Control[Desired, Observed] = Control(
    "ssh_guard", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
