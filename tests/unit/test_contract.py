"""Every control of the registry fits the one contract, run the same way with no per-control code.

For each control, ``tests/unit/data/<control>/contract.json`` names two outputs captured from
lab hosts: a fresh host (some check must fail) and a compliant one (no finding), optionally the
policy file it was captured under (``"policy"``, from the repository root; default: the
documented defaults) and the controller records the control reads (``"inputs"``, JSON).  Each
runs desired → observe script → parse → compare through :func:`baomi.controls.contract.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from baomi.controls import NAMES, get
from baomi.controls.contract import FAIL, NOT_APPLICABLE, PASS, HostContext, Result, evaluate
from baomi.controls.registry import BASELINE, CONTROLS, SECTIONS
from baomi.findings import CHECK_ID
from baomi.policy import load_text

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[2]
POLICY = load_text("")


def _case(name: str, which: str) -> tuple[Result, dict[str, Any]]:
    case = json.loads((DATA / name / "contract.json").read_text(encoding="utf-8"))[which]
    control = get(name)
    policy = load_text((ROOT / case["policy"]).read_text(encoding="utf-8")) \
        if "policy" in case else POLICY
    ctx = HostContext.of(policy, case["groups"], case["host"], **case.get("inputs", {}))
    want = control.desired(ctx)
    script = control.observe_script(want)
    assert isinstance(script, str) and script.strip(), f"{name}: empty observe script"
    output = (DATA / name / case["capture"]).read_text(encoding="utf-8")
    return evaluate(control, ctx.host, want, control.parse(output, want)), case


@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_host_fails_with_stable_check_ids(name: str) -> None:
    result, _ = _case(name, "fresh")
    assert result.findings, f"{name}: a fresh host shows no finding"
    declared = {c.id for c in get(name).checks}
    for f in result.findings:
        assert CHECK_ID.fullmatch(f.check) and f.check in declared, f.check
        assert f.control == name and set(f.clauses) <= set(get(name).clauses), f
    assert FAIL in result.statuses().values()


@pytest.mark.parametrize("name", NAMES)
def test_a_compliant_host_passes_every_applicable_check(name: str) -> None:
    result, _ = _case(name, "compliant")
    assert not result.findings, "\n".join(map(str, result.findings))
    assert set(result.statuses().values()) <= {PASS, NOT_APPLICABLE}
    assert PASS in result.statuses().values(), f"{name}: nothing was checked"


def test_the_registry_is_the_one_list() -> None:
    from baomi.deploy.common import ALL_CONTROLS

    assert ALL_CONTROLS == BASELINE
    assert len({e.name for e in CONTROLS + SECTIONS}) == len(CONTROLS + SECTIONS)
    for name in NAMES:
        control = get(name)
        assert control.name == name
        assert (Path(__file__).parents[2] / "deploy" / f"{name}.py").exists(), name
        assert (Path(__file__).parents[2] / "checks" / f"test_{name}.py").exists(), name
