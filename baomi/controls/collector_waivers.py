"""What the collector judges waivers with (R-AUD): its copy of the policy and its host → groups
map, checked against the controller's policy and root's fleet inventory.

The service applies the policy's waivers to every finding it shows (:mod:`baomi.collector
.waiving`) and its offboarding runner re-judges HR's requests with the same policy.  A copy
older than the controller's, or a map that drifted from the inventory, would make the collector
waive (or refuse) differently from the audit without a word: these two checks say so.

- ``collector.policy_copy``: ``/etc/baomi/collector-policy.yaml`` is there, root:baomi-collector
  0640, and byte for byte the controller's policy (its SHA-256 is input ``policy_sha256``, read
  on the controller by ``checks/test_collector.py``; with no such input, e.g. a policy given as
  text, presence and mode are still checked and the evidence says the content was not).
- ``collector.waiver_groups``: :data:`baomi.fleet_access.GROUPS_MAP` there, root:baomi-collector
  0640, well-formed, and the groups of root's fleet inventory on the host.
"""

from __future__ import annotations

import shlex

from baomi import fleet_access as fleet
from baomi.controls.contract import check
from baomi.findings import Finding
from baomi.observe import Sections

USER = "baomi-collector"
# The service's copy of the policy (outside the root-only /etc/baomi/collector): its waivers
# apply to the findings it shows; named in database.env (BAOMI_COLLECTOR_POLICY).
POLICY_COPY = fleet.WEB_POLICY
POLICY_INPUT = "policy_sha256"  # the controller's policy file, hex SHA-256
GROUPS_MAP = fleet.GROUPS_MAP
MODE = f"root:{USER} 640"

POLICY_CHECK = check("collector.policy_copy", "the service's copy of the policy is the "
                     "controller's, byte for byte (root:baomi-collector 0640)", ("R-AUD",))
WAIVER_GROUPS = check("collector.waiver_groups", "the service's host → groups map for waivers "
                      "is the fleet inventory's (root:baomi-collector 0640)")
CHECKS = (POLICY_CHECK, WAIVER_GROUPS)

# The groups of root's fleet inventory on the host, as the deploy writes the map (the venv's
# baomi reads the inventory: pyinfra's format is Python).
_FLEET_GROUPS = ("import sys\nfrom baomi.fleet_access import groups_map_from_inventory as g\n"
                 "sys.stdout.write(g(sys.argv[1]))")


def observe_commands(venv: str) -> dict[str, str]:
    """Read-only: the copy's owner, mode and digest; the map and the inventory's groups."""
    return {
        "policy_copy": f"stat -c '%U:%G %a' {POLICY_COPY} && sha256sum < {POLICY_COPY}",
        "waiver_groups": f"stat -c '%U:%G %a' {GROUPS_MAP} && cat {GROUPS_MAP}",
        "fleet_groups": f"{venv}/bin/python -c {shlex.quote(_FLEET_GROUPS)} {fleet.INVENTORY}",
    }


def parse_policy_copy(sec: Sections) -> tuple[str, str] | None:
    """(owner:group mode, hex SHA-256) of the copy; None when it is missing or unreadable."""
    lines = (sec.text("policy_copy") or "").split("\n")
    digest = lines[1].split()[0] if len(lines) > 1 and lines[1].split() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return None
    return lines[0].strip(), digest


def policy_copy_findings(want_sha256: str | None, seen: tuple[str, str] | None) -> list[Finding]:
    expected = (f"{MODE}, the controller's policy (sha256 {want_sha256[:16]}…)" if want_sha256
                else MODE)
    if seen is None:
        return [POLICY_CHECK.finding(POLICY_COPY, expected, "missing", "medium")]
    mode, digest = seen
    out = []
    if mode != MODE:
        out.append(POLICY_CHECK.finding(POLICY_COPY, MODE, mode, "medium"))
    if want_sha256 and digest != want_sha256:
        out.append(POLICY_CHECK.finding(
            POLICY_COPY, f"the controller's policy (sha256 {want_sha256[:16]}…)",
            f"another policy (sha256 {digest[:16]}…): the collector waives and checks HR's "
            "requests by it; re-run `baomi collector-deploy` with this policy", "medium"))
    return out


def groups_map_findings(groups_map: str | None, fleet_groups: str | None,
                        fleet_groups_error: str) -> list[Finding]:
    """The waivers' groups map: there, root:baomi-collector 0640, a well-formed map, equal to
    the groups of root's fleet inventory on the host."""
    expected = f"{MODE}, the fleet inventory's groups"
    if groups_map is None:
        return [WAIVER_GROUPS.finding(GROUPS_MAP, expected, "missing", "medium")]
    mode, _, text = groups_map.partition("\n")
    out = []
    if mode.strip() != MODE:
        out.append(WAIVER_GROUPS.finding(GROUPS_MAP, MODE, mode.strip(), "medium"))
    try:
        shipped = fleet.parse_groups_map(text, GROUPS_MAP)
    except fleet.FleetError as exc:
        return [*out, WAIVER_GROUPS.finding(GROUPS_MAP, expected, f"malformed: {exc}"[:300],
                                            "medium")]
    if fleet_groups is None:
        return [*out, WAIVER_GROUPS.finding(
            fleet.INVENTORY, "the fleet inventory's groups readable",
            fleet_groups_error or "missing", "medium")]
    try:
        fleet_map = fleet.parse_groups_map(fleet_groups, fleet.INVENTORY)
    except fleet.FleetError as exc:
        return [*out, WAIVER_GROUPS.finding(fleet.INVENTORY, "the fleet inventory's groups",
                                            str(exc)[:300], "medium")]
    differ = sorted(h for h in shipped.keys() | fleet_map.keys()
                    if shipped.get(h) != fleet_map.get(h))
    if differ:
        out.append(WAIVER_GROUPS.finding(
            GROUPS_MAP, "the fleet inventory's groups",
            f"drifted: {len(differ)} host(s) differ ({', '.join(differ[:5])}"
            f"{', ...' if len(differ) > 5 else ''})", "medium"))
    return out


def evidence(want_sha256: str | None, policy_copy: tuple[str, str] | None,
             groups_map: str | None, fleet_groups: str | None) -> dict[str, str]:
    """What the two checks compared, for a passing record."""
    found: dict[str, str] = {}
    if policy_copy is not None:
        found[POLICY_CHECK.id] = (
            f"{POLICY_COPY} {policy_copy[0]}, sha256 {policy_copy[1]}; "
            + ("equal to the controller's policy" if want_sha256 else
               "content not compared (the controller's policy is not a file here)"))
    if groups_map is not None and fleet_groups is not None:
        try:
            hosts = len(fleet.parse_groups_map(fleet_groups))
        except fleet.FleetError:
            hosts = 0
        found[WAIVER_GROUPS.id] = (f"{GROUPS_MAP} {groups_map.partition(chr(10))[0]}; "
                                   f"{hosts} hosts, compared with {fleet.INVENTORY}")
    return found
