"""The controls: the registry (:mod:`.registry`), the contract (:mod:`.contract`), and
``policy explain`` — which policy section serves which clause, and what enforces, verifies
and watches it.

A section's deploy module, check module and agent rules are *discovered*, not declared:
``policy explain`` shows only what exists in this installation, so a clause nothing serves yet
is shown as unserved rather than papered over.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from baomi.clauses import CLAUSES
from baomi.controls.contract import Control
from baomi.controls.registry import CONTROLS, NAMES, SECTIONS, Entry
from baomi.policy import Policy, as_dict

__all__ = ["NAMES", "explain", "get"]


def get(name: str) -> Control[Any, Any]:
    """The control ``name`` of the registry (its module's ``CONTROL``)."""
    if name not in NAMES:
        raise KeyError(f"{name!r} is not a control ({', '.join(NAMES)})")
    control: Control[Any, Any] = importlib.import_module(f"baomi.controls.{name}").CONTROL
    return control


def _existing(module: str) -> str | None:
    try:
        return module if importlib.util.find_spec(module) is not None else None
    except (ImportError, ValueError):
        return None


def _agent_rules(section: str) -> tuple[str, ...]:
    """Agent rules watching this section, from the agent's own registry when installed."""
    if _existing("baomi.agent.rules") is None:
        return ()
    try:
        rules = importlib.import_module("baomi.agent.rules")
    except ImportError:
        return ()
    table: dict[str, tuple[str, ...]] = getattr(rules, "RULES_BY_CONTROL", {})
    return tuple(table.get(section, ()))


def _row(policy: Policy, e: Entry) -> dict[str, Any]:
    settings = getattr(policy, e.name, None)
    return {
        "section": e.name,
        "kind": e.kind,
        "summary": e.summary,
        "settings": as_dict(settings) if settings is not None else None,
        "deploy": _existing(f"baomi.deploy.{e.name}"),
        "check": _existing(f"baomi.checks.test_{e.name}"),
        "agent_rules": list(_agent_rules(e.name)),
    }


def explain(policy: Policy) -> list[dict[str, Any]]:
    """One row per clause of the catalogue, in catalogue order; unserved clauses included."""
    rows = []
    for clause in CLAUSES.values():
        serving = [_row(policy, e) for e in CONTROLS + SECTIONS if clause.id in e.clauses]
        rows.append({
            "clause": clause.id,
            "title": clause.title,
            "summary": clause.summary,
            "controls": serving,
            "enforced": any(s["deploy"] for s in serving),
            "verified": any(s["check"] for s in serving),
            "watched": any(s["agent_rules"] for s in serving),
        })
    return rows
