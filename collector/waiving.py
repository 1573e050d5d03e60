"""Waivers on the collector's findings, decided at read time by :func:`baomi.waivers.decide`.

The collector stores what hosts report; whether a failing finding is waived is a question of
the policy *today*, so it is never written into a row: every read (``GET /findings``, the
hosts' counts, the summary, the dashboard, ``baomi findings``) asks a :class:`Judge` made for
today's date (UTC). A waiver that expires tonight stops waiving tomorrow without any rewrite,
and the audit (``baomi.results.record``) and the collector ask the same function, so they
cannot disagree.

Where the policy comes from: ``policy`` in ``collector.toml`` or ``serve --policy FILE``
(``baomi collector-deploy`` ships a copy and names it in ``BAOMI_COLLECTOR_POLICY``). A host's
inventory groups come from ``waiver_groups`` (a JSON map of host name → list of group names:
``BAOMI_COLLECTOR_GROUPS``, the copy ``baomi collector-deploy`` derives from the controller's
inventory, :data:`baomi.fleet_access.GROUPS_MAP`, since the service cannot read root's fleet
inventory), else from ``offboard_inventory`` (the collector's one pyinfra inventory) when it is
set; otherwise a waiver covers a host only by name. :class:`Waivers` reloads each file when
its mtime or size changes; a file that became bad keeps the last good one and logs one line.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baomi.fleet_access import FleetError, parse_groups_map
from baomi.inventory import InventoryError, host_groups
from baomi.policy import Policy, PolicyError, load
from baomi.waivers import NONE, Decision, decide

log = logging.getLogger("baomi.collector")

FAILING = frozenset({"open", "acknowledged"})  # a resolved finding is not failing: no waiver


class WaiverError(Exception):
    """The policy or inventory for waivers cannot be read (one line)."""


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class Judge:
    """The waivers of one policy on one day. Pure: no clock, no I/O."""

    policy: Policy | None
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    today: dt.date = dt.date(1970, 1, 1)

    def decision(self, host: str, check: str, clauses: Iterable[str], state: str) -> Decision:
        """The waivers' decision for a finding in ``state`` (only failing ones are decided)."""
        if self.policy is None or state not in FAILING:
            return NONE
        return decide(self.policy, host, self.groups.get(host, ()), check, clauses,
                      self.today)

    def mark(self, finding: dict[str, Any]) -> dict[str, Any]:
        """``finding`` (a dict of the API) with ``waived`` and ``waiver`` added."""
        d = self.decision(finding["host"], finding["check"], finding["clauses"],
                          finding["state"])
        finding["waived"] = d.waived
        finding["waiver"] = d.as_dict()
        return finding


NO_WAIVERS = Judge(None)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def one_line(exc: Exception) -> str:
    lines = str(exc).splitlines() or [type(exc).__name__]
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    return lines[0] + more


def load_policy(path: str, today: dt.date) -> Policy:
    try:
        return load(path, today=today)
    except PolicyError as exc:
        raise WaiverError(f"policy for waivers: {one_line(exc)}") from None


def load_groups_map(path: str) -> dict[str, frozenset[str]]:
    """The JSON map of host name → list of group names (``waiver_groups``), or WaiverError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WaiverError(f"groups for waivers: {path}: cannot read it "
                          f"({exc.strerror if isinstance(exc, OSError) else exc})") from None
    try:
        return parse_groups_map(text, path)
    except FleetError as exc:
        raise WaiverError(f"groups for waivers: {one_line(exc)}") from None


def load_groups(path: str, groups_map: str = "") -> dict[str, frozenset[str]]:
    """Each host's groups: from the JSON map when given, else the pyinfra inventory, else
    none (waivers then match host names only)."""
    if groups_map:
        return load_groups_map(groups_map)
    if not path:
        return {}
    try:
        return {h: frozenset(g) for h, g in host_groups(path).items()}
    except InventoryError as exc:
        raise WaiverError(f"inventory for waivers' groups: {one_line(exc)}") from None


class Waivers:
    """The collector's source of :class:`Judge`s: the policy file (and the groups map or the
    inventory for groups), reloaded when they change. ``groups`` (the JSON map) wins over
    ``inventory`` when both are given."""

    def __init__(self, policy: str, inventory: str = "", groups: str = "",
                 clock: Callable[[], dt.date] = today_utc) -> None:
        self.policy_path = str(Path(policy).absolute()) if policy else ""
        self.groups_path = str(Path(groups).absolute()) if groups else ""
        self.inventory_path = (str(Path(inventory).absolute()) if inventory and not groups
                               else "")
        self.clock = clock
        self._lock = threading.Lock()
        self._stamps: tuple[object, ...] | None = None
        self._policy: Policy | None = None
        self._groups: dict[str, frozenset[str]] = {}

    def check(self) -> None:
        """Load now; WaiverError (one line) if a file is bad (``serve`` stops on it)."""
        if self.policy_path:
            self._policy = load_policy(self.policy_path, self.clock())
            self._groups = load_groups(self.inventory_path, self.groups_path)
            self._stamps = self._now_stamps()

    def _now_stamps(self) -> tuple[object, ...]:
        return (_stamp(self.policy_path), _stamp(self.inventory_path), _stamp(self.groups_path))

    def judge(self) -> Judge:
        """A judge for today with the newest good policy (reloaded when a file changed)."""
        if not self.policy_path:
            return NO_WAIVERS
        with self._lock:
            stamps = self._now_stamps()
            if stamps != self._stamps:
                self._stamps = stamps
                try:
                    policy = load_policy(self.policy_path, self.clock())
                    groups = load_groups(self.inventory_path, self.groups_path)
                except WaiverError as exc:
                    kept = "keeping the last good one" if self._policy else "no waivers apply"
                    log.error("%s; %s", exc, kept)
                else:
                    self._policy, self._groups = policy, groups
            return Judge(self._policy, self._groups, self.clock())
