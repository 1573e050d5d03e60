"""R-OFF 离职帐号冻结与注销, R-RET 清退客户资料: run the core's freeze or purge steps per host.

Run by ``baomi offboard`` (baomi/controller/commands/offboard.py) through the runner;
parameters come from the environment:

    BAOMI_OFFBOARD_ACTION   freeze | purge | cancel
    BAOMI_OFFBOARD_USER     the departed user (freeze, cancel)
    BAOMI_OFFBOARD_TICKET, _REASON, _OPERATOR, _EFFECTIVE (YYYY-MM-DD), _TIME (ISO, UTC)
    BAOMI_OFFBOARD_NOW      the purge's date (YYYY-MM-DD)

Every operation is named ``[offboarding] USER PHASE: what`` (PHASE: freeze, purge, cancel,
wait, absent, refused), which the CLI turns into the ledger.  The steps themselves (command + "is it
already done" test) come from baomi/fixes/offboarding.py, decided on what baomi/offboarding.py
reads; this file only executes them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

# `pyinfra INVENTORY deploy/offboarding.py` from a checkout without an installed baomi.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinfra import host
from pyinfra.api import operation

from baomi import offboarding as core
from baomi.deploy.common import CommandSucceeds, Observation, nothing_to_do, policy, refuse
from baomi.fixes import offboarding as fix
from baomi.policy import Policy

C = core.NAME


def name(user: str, phase: str, what: str) -> str:
    return f"[{C}] {user} {phase}: {what}"


PLAN: list[dict[str, str]] = []


def planned(meta: object, user: str, phase: str, what: str, **extra: str) -> None:
    """Remember, per operation hash, which user/phase/step it is (the CLI's ledger joins
    pyinfra's results on it: pyinfra merges the names of different hosts' operations)."""
    PLAN.append({"hash": str(getattr(meta, "_hash", "")), "user": user, "phase": phase,
                 "what": what, **extra})
    folder = os.environ.get("BAOMI_OFFBOARD_PLAN")
    if folder:
        path = Path(folder) / f"{host.name}.json"
        path.write_text(json.dumps(PLAN, ensure_ascii=False), encoding="utf-8")


@operation()
def run_step(step_script: str, done: str, reason: str):  # type: ignore[no-untyped-def]
    """Run a core step unless its own test says it is already done (read at execute time)."""
    if host.get_fact(CommandSucceeds, check=f"( {done} )"):
        host.noop(reason)
        return
    yield step_script


def refused(user: str, reason: str) -> None:
    """The host refuses this user (a clear error in the host's row; named in the ledger)."""
    planned(refuse(name=name(user, "refused", reason), message=f"offboarding refused: {reason}"),
            user, "refused", reason)


def note(user: str, phase: str, what: str, reason: str, **extra: str) -> None:
    """Nothing to do for USER on this host, and why ('unchanged', named in the ledger)."""
    planned(nothing_to_do(name=name(user, phase, what), reason=reason), user, phase, what,
            **extra)


def _env(key: str, default: str = "") -> str:
    return os.environ.get(f"BAOMI_OFFBOARD_{key}", default)


def _connect_user() -> str | None:
    value = host.data.get("ssh_user")
    return str(value) if value else None


def execute(steps: list[fix.Step]) -> None:
    for step in steps:
        meta = run_step(name=name(step.user, step.phase, step.what), step_script=step.script(),
                        done=step.done, reason=f"{step.user}: already done: {step.what}")
        planned(meta, step.user, step.phase, step.what, clause=step.clause)


def _facts(pol: Policy, user: str) -> core.Facts | None:
    """The host's facts about USER, or None once the host refused them (named in the plan)."""
    facts = core.parse(user, host.get_fact(Observation, script=core.observe_script(user)))
    reason = core.host_refusal(pol, user, facts, _connect_user())
    if reason:
        refused(user, reason)
        return None
    return facts


def freeze() -> None:
    pol = policy()
    user = _env("USER")
    reason = core.refusal(pol, user, _connect_user())
    if reason:
        refused(user, reason)
        return
    facts = _facts(pol, user)
    if facts is None:
        return
    if facts.account is None:
        note(user, "absent", "no such account on this host",
             f"{user}: no such account on this host")
        return
    ticket = fix.Ticket(ticket=_env("TICKET"), operator=_env("OPERATOR"), reason=_env("REASON"),
                        effective=date.fromisoformat(_env("EFFECTIVE")), time=_env("TIME"))
    execute(fix.freeze_steps(pol, user, facts, ticket))


def purge() -> None:
    pol = policy()
    today = date.fromisoformat(_env("NOW"))
    records = core.parse_records(
        core.sections_out(host.get_fact(Observation, script=core.records_script()), "records"))
    for user, record in sorted(records.items()):
        if record.get("state") != "frozen":
            continue
        if not core.is_due(record, today):
            due = str(record.get("due"))
            note(user, "wait", f"deletion due on {due}", f"{user}: frozen, deletion due on {due}",
                 due=due)
            continue
        facts = _facts(pol, user)
        if facts is None:
            continue
        reason = core.purge_refusal(record, facts)
        if reason:
            refused(user, reason)
            continue
        execute(fix.purge_steps(pol, record, facts, _env("TIME")))
        # The archive's name is in the step; the CLI records it with the deletion.


def cancel() -> None:
    """A freeze that is not to end in deletion (a rehire, a mistake): the host's record says
    so, so no later purge on this host deletes the account. Access is not restored here."""
    user = _env("USER")
    reason = core.refusal(policy(), user, _connect_user())
    if reason:
        refused(user, reason)
        return
    facts = core.parse(user, host.get_fact(Observation, script=core.observe_script(user)))
    record = facts.record
    if record is None or record.get("state") not in ("frozen", "cancelled"):
        state = record.get("state") if record else "no record"
        note(user, "absent", f"nothing to cancel ({state})",
             f"{user}: nothing to cancel on this host ({state})")
        return
    execute(fix.cancel_steps(record, _env("TICKET"), _env("OPERATOR"), _env("REASON"),
                             _env("TIME")))


ACTIONS = {"freeze": freeze, "purge": purge, "cancel": cancel}

action = _env("ACTION")
if action not in ACTIONS:
    sys.stderr.write(f"BAOMI_OFFBOARD_ACTION must be one of {', '.join(ACTIONS)}\n")
    raise SystemExit(2)
ACTIONS[action]()
