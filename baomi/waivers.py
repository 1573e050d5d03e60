"""Waivers: the one place that decides whether a failing check is waived on a host.

A waiver of the policy names a clause or a control, the hosts or inventory groups it covers,
a reason, an approver and an expiry date.  The checks (plain ``pytest checks``), ``baomi
audit`` and the audits the collector keeps all ask :func:`decide`, so they cannot disagree.

- A failing check on a covered host, with a waiver that has not expired, is **waived**: shown
  with its approver, reason and expiry, and it does not make the audit fail.
- An **expired** waiver no longer waives: the check fails and the reason says since when the
  waiver expired (the policy still loads; :mod:`baomi.policy` turns an expired date into a
  warning, not an error, so offboarding keeps working the morning after).
- A waiver that covers no failing check in an audit is **stale** (:func:`stale`): the problem
  it excused is gone or it names hosts that are not there; the report lists it for removal.

Pure: no clock (``today`` is passed in), no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from baomi.policy import Policy, Waiver


@dataclass(frozen=True)
class Decision:
    """What the waivers say about one failing check on one host."""

    waived: bool
    waiver: Waiver | None  # the waiver applied, or the expired one that no longer applies
    index: int  # the waiver's position in the policy (waivers[index]), -1 for none

    @property
    def expired(self) -> bool:
        return self.waiver is not None and not self.waived

    def note(self) -> str:
        """One line for a report: who waived it until when, or since when it is expired."""
        w = self.waiver
        if w is None:
            return ""
        if self.waived:
            return f"waived by {w.approver} until {w.expires}: {w.reason}"
        return f"waiver by {w.approver} expired on {w.expires} (no longer waives): {w.reason}"

    def as_dict(self) -> dict[str, Any] | None:
        w = self.waiver
        if w is None:
            return None
        return {"index": self.index, "clause": w.clause, "control": w.control,
                "hosts": list(w.hosts), "reason": w.reason, "approver": w.approver,
                "expires": w.expires.isoformat(), "expired": self.expired}


NONE = Decision(False, None, -1)


def covers(waiver: Waiver, host: str, groups: Iterable[str], control: str,
           clauses: Iterable[str]) -> bool:
    """Does ``waiver`` name this host (or one of its groups) and this check's control or one
    of its clauses?"""
    if not ({host, *groups} & set(waiver.hosts)):
        return False
    if waiver.control is not None and waiver.control == control:
        return True
    return waiver.clause is not None and waiver.clause in set(clauses)


def decide(policy: Policy, host: str, groups: Iterable[str], check_id: str,
           clauses: Iterable[str], today: dt.date) -> Decision:
    """The decision for a *failing* check: a live waiver wins over an expired one; among
    live ones, the policy's first."""
    groups, clauses = tuple(groups), tuple(clauses)
    control = check_id.split(".", 1)[0]
    expired = NONE
    for index, waiver in enumerate(policy.waivers):
        if not covers(waiver, host, groups, control, clauses):
            continue
        if waiver.expires >= today:
            return Decision(True, waiver, index)
        if expired.waiver is None:
            expired = Decision(False, waiver, index)
    return expired


def stale(policy: Policy, used: Iterable[int], today: dt.date) -> list[tuple[int, Waiver]]:
    """Live waivers (by policy index) that waived nothing in an audit whose waived checks
    came from ``used``: candidates for removal."""
    applied = set(used)
    return [(i, w) for i, w in enumerate(policy.waivers)
            if i not in applied and w.expires >= today]
