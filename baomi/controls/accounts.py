"""R-PRV 权限审批: an account exists only with a recorded request (部门主管提报) and approval
(分管副总批准).

The controller keeps the requests, append-only, in ``$BAOMI_STATE_DIR/accounts/requests.jsonl``
(default state dir /var/lib/baomi; 0600): :class:`Request`, :func:`load_requests`, used by
``baomi account``.  The control contract (:mod:`baomi.controls.contract`) gets them from the
controller as ``ctx.inputs["account_requests"]`` (:class:`Request` s, or records as stored),
so ``desired`` reads no file.  The deploy creates only accounts that a request covers; the
check (``accounts.recorded``) lists every account on a host (UID at or above
``accounts.min_uid``) that no request covers.

>>> r = Request("alice", "head.sales", "vp.ops", "2026-11-23T09:00:00Z")
>>> covers(r, "srv1")
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import script, sections
from baomi.offboarding import RETIRED_PREFIX, valid_name
from baomi.records import RecordError, append_jsonl, state_dir
from baomi.recordstore import ACCOUNTS, RecordStore, open_store

RECORDED = check("accounts.recorded",
                 "every personal account has a recorded request (部门主管) and approval (分管副总)")
CHECKS = (RECORDED,)
INPUT = "account_requests"  # the key of ctx.inputs: the controller's approved requests
NOBODY = 65534


@dataclass(frozen=True)
class Request:
    """Who asked for an account and who approved it."""

    user: str
    requester: str
    approver: str
    time: str
    hosts: tuple[str, ...] = ()  # () = every host of the fleet
    ticket: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hosts": list(self.hosts)}


def problems(request: Request) -> list[str]:
    """Why a request cannot be recorded (empty: it can)."""
    found = []
    if not valid_name(request.user):
        found.append(f"{request.user!r} is not a valid POSIX user name")
    if not request.requester.strip():
        found.append("the requester (the department head, 部门主管) is missing")
    if not request.approver.strip():
        found.append("the approver (the senior approval, 分管副总) is missing")
    if request.requester.strip() and request.requester == request.approver:
        found.append("the requester cannot approve their own request")
    return found


@dataclass(frozen=True)
class Revocation:
    """An account's requests withdrawn (a purge, a mistake): recorded in the same file, so a
    later ``baomi account apply`` does not recreate the account. A new request after it grants
    the account again."""

    user: str
    by: str
    ticket: str
    time: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"action": "revoke", **asdict(self)}


def revoke(user: str, by: str, ticket: str, reason: str = "",
           path: Path | None = None, store: RecordStore | None = None) -> Revocation:
    """Record that USER's requests are revoked (for ``baomi account revoke`` and for the
    offboarding purge). Raises ValueError naming what is missing; nothing is then recorded."""
    missing = [what for what, value in (("who revokes (--by)", by), ("the ticket", ticket))
               if not value.strip()]
    if not valid_name(user):
        missing.insert(0, f"{user!r} is not a valid POSIX user name")
    if missing:
        raise ValueError("; ".join(missing))
    revocation = Revocation(user, by.strip(), ticket.strip(),
                            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), reason)
    if path is not None:
        append_jsonl(path, [revocation.as_dict()])
    else:
        (store or open_store()).append(ACCOUNTS, [revocation.as_dict()])
    return revocation


def live_requests(items: Iterable[Request | Revocation | Mapping[str, Any]]) -> list[Request]:
    """The requests still in force, in record order: a revocation removes every earlier
    request of its user (even a revocation record missing its ticket: revoking is the safe
    side); invalid requests cover nothing."""
    live: list[Request] = []
    for item in items:
        if isinstance(item, Revocation) or (isinstance(item, Mapping)
                                            and item.get("action") == "revoke"):
            user = item.user if isinstance(item, Revocation) else str(item.get("user"))
            live = [r for r in live if r.user != user]
            continue
        request = request_of(item)
        if request is not None:
            live.append(request)
    return live


def covers(request: Request, host: str) -> bool:
    return not request.hosts or host in request.hosts


def requests_path() -> Path:
    return state_dir() / "accounts" / "requests.jsonl"


def request_of(item: Request | Mapping[str, Any]) -> Request | None:
    """A request as recorded (one JSON line's object), or None when it is not a valid one."""
    if isinstance(item, Request):
        request = item
    else:
        try:
            request = Request(str(item["user"]), str(item["requester"]), str(item["approver"]),
                              str(item["time"]), tuple(item.get("hosts") or ()),
                              str(item.get("ticket", "")), str(item.get("reason", "")))
        except (KeyError, TypeError, AttributeError):
            return None
    return None if problems(request) else request


def parse_requests(text: str) -> list[Request]:
    """The requests in force after the file's revocations (see :func:`live_requests`)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return live_requests(records)


def load_requests(path: Path | None = None, store: RecordStore | None = None) -> list[Request]:
    """The requests in force: from PATH when given, else from the store the policy names
    (the state dir's requests.jsonl, or the collector)."""
    if path is None:
        return live_requests((store or open_store()).read(ACCOUNTS))
    if not path.exists():
        return []
    try:
        return parse_requests(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read the account requests: {exc}") from None


@dataclass(frozen=True)
class Desired:
    create: tuple[Request, ...]      # accounts this host may have, with their request
    min_uid: int                     # personal accounts start here (policy accounts.min_uid)
    require_approval: bool           # policy accounts.require_approval


def desired(ctx: HostContext) -> Desired:
    items: Iterable[Request | Revocation | Mapping[str, Any]] = ctx.inputs.get(INPUT, ())
    latest: dict[str, Request] = {}
    for r in live_requests(items):
        if covers(r, ctx.host):
            latest[r.user] = r
    return Desired(tuple(latest[u] for u in sorted(latest)), ctx.policy.accounts.min_uid,
                   ctx.policy.accounts.require_approval)


@dataclass(frozen=True)
class Observed:
    accounts: dict[str, int] = field(default_factory=dict)  # name → UID


def observe_script(want: Desired) -> str:
    # Fields 1 and 3 of passwd only: names and UIDs.
    return script({"passwd": "getent passwd | cut -d: -f1,3"})


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output).get("passwd")
    accounts: dict[str, int] = {}
    for line in (sec.out if sec is not None else "").splitlines():
        name, _, uid = line.strip().partition(":")
        if name and uid.isdigit():
            accounts[name] = int(uid)
    return Observed(accounts)


def personal(want: Desired, seen: Observed) -> dict[str, int]:
    """Accounts of people: UID ≥ min_uid, not nobody, not a retired UID's placeholder."""
    return {name: uid for name, uid in sorted(seen.accounts.items())
            if uid >= want.min_uid and uid != NOBODY and not name.startswith(RETIRED_PREFIX)}


def compare(want: Desired, seen: Observed) -> list[Finding]:
    """Every personal account that no request covers is a finding."""
    if not want.require_approval:
        return []
    covered = {r.user for r in want.create}
    return [RECORDED.finding(f"account {name} (UID {uid})",
                             "a recorded request (部门主管) and approval (分管副总)", "no record")
            for name, uid in personal(want, seen).items() if name not in covered]


def not_applicable(want: Desired) -> str | None:
    return None if want.require_approval else "policy accounts.require_approval is false"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    if personal(want, seen):
        return {}
    return {RECORDED.id: f"no personal account (UID ≥ {want.min_uid}) on this host"}


CONTROL: Control[Desired, Observed] = Control(
    "accounts", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped)
