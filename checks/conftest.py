"""The checks' shared fixtures and the one generic check runner.

Each ``checks/test_<control>.py`` is one line, ``test_check = control_checks("<control>")``:
a test per (host, check ID) of the control, tagged with the check's clauses.  The control runs
once per host through :func:`baomi.controls.contract.run` (desired → observe over testinfra →
parse → compare); each test then reports its own check: failed with the findings' evidence,
skipped with the reason when not applicable, passed otherwise.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from collections.abc import Callable
from typing import Any

import pytest

from baomi.checks import report as results_plugin
from baomi.controls import get
from baomi.controls.contract import NOT_APPLICABLE, Check, HostContext, Result, run
from baomi.findings import report
from baomi.inventory import InventoryError, host_groups
from baomi.policy import Policy, PolicyError, default_policy_path, load
from baomi.results import WAIVED, record


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("baomi")
    group.addoption("--policy", default=None,
                    help="policy file (default: as the baomi command finds it)")
    group.addoption("--inventory", default=None,
                    help="pyinfra inventory, for each host's groups (default: $BAOMI_INVENTORY)")
    results_plugin.add_options(parser)  # the audit's records: in plain runs and audits alike


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id): the clause of REQUIREMENTS.md a check verifies")
    results_plugin.configure(config)
    # Plain host names would otherwise go through paramiko, which accepts unknown host keys;
    # OpenSSH with the given ssh_config pins them (StrictHostKeyChecking yes).
    if getattr(config.option, "connection", None) is None:
        config.option.connection = "ssh"


@pytest.fixture(scope="session")
def policy(pytestconfig: pytest.Config) -> Policy:
    path = pytestconfig.getoption("policy") or default_policy_path()
    try:
        return load(path)
    except PolicyError as exc:
        pytest.exit(f"policy problems:\n{exc}", returncode=2)


@pytest.fixture(scope="session")
def inventory_groups(pytestconfig: pytest.Config) -> dict[str, set[str]]:
    path = pytestconfig.getoption("inventory") or os.environ.get("BAOMI_INVENTORY")
    if not path:
        pytest.exit("give --inventory (the pyinfra inventory) so checks know each host's groups",
                    returncode=2)
    try:
        return host_groups(path)
    except InventoryError as exc:
        pytest.exit(str(exc), returncode=2)


@pytest.fixture
def groups(host: Any, inventory_groups: dict[str, set[str]]) -> set[str]:
    name = host.backend.hostname
    if name not in inventory_groups:
        pytest.fail(f"host {name} is not in the inventory; its groups are unknown")
    return inventory_groups[name]


@pytest.fixture
def context(host: Any, policy: Policy, groups: set[str]) -> HostContext:
    return HostContext.of(policy, groups, host.backend.hostname)


def observe(host: Any, script: str) -> str:
    """Run a control's read-only observe script on the host and return its output."""
    result = host.run(f"sh -c {shlex.quote(script)}")
    if result.rc != 0:
        pytest.fail(f"observe script failed on {host.backend.hostname} (rc {result.rc}): "
                    f"{result.stderr.strip()[-300:]}")
    return str(result.stdout)


@pytest.fixture(scope="session")
def _results() -> dict[tuple[str, str], Result]:
    """Each control is observed once per host in a session (its checks share the reading)."""
    return {}


@pytest.fixture(scope="session")
def _unreachable() -> dict[str, str]:
    """Hosts ssh could not reach (exit 255), with ssh's reason: their other checks end at once
    as errors instead of each waiting for its own connection timeout."""
    return {}


def _read_once(host: Any, key: tuple[str, str], results: dict[tuple[str, str], Result],
               unreachable: dict[str, str], read: Callable[[], Result]) -> Result:
    name = key[0]
    if name in unreachable:
        pytest.fail(f"{name} could not be reached: {unreachable[name]}", pytrace=False)
    if key not in results:
        try:
            results[key] = read()
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            out = exc.args[0] if exc.args else exc
            unreachable[name] = (str(getattr(out, "stderr", "")).strip()
                                 or str(out)).splitlines()[-1][:300]
            pytest.fail(f"{name} could not be reached: {unreachable[name]}", pytrace=False)
    return results[key]


def control_checks(name: str, inputs: Callable[[HostContext], HostContext] | None = None,
                   ) -> Callable[..., None]:
    """The test function of one control: parametrised over its check IDs, with their clauses.

    ``inputs`` adds controller records to the host's context (the accounts control's requests).
    """
    control = get(name)

    def read(host: Any, context: HostContext) -> Result:
        ctx = inputs(context) if inputs else context
        return run(control, ctx, lambda script: observe(host, script))

    return host_checks(name, control.checks, read)


def host_checks(name: str, checks: tuple[Check, ...],
                read: Callable[[Any, HostContext], Result]) -> Callable[..., None]:
    """A test per (host, check ID) of ``checks``; ``read`` reads a host once per session and
    gives its :class:`Result`.  :func:`control_checks` for registry controls; a procedure with
    checks of its own (offboarding) passes its own ``read``."""
    params = [pytest.param(c.id, id=c.id, marks=[pytest.mark.clause(x) for x in c.clauses])
              for c in checks]
    by_id = {c.id: c for c in checks}

    def test_check(check_id: str, host: Any, context: HostContext,
                   _results: dict[tuple[str, str], Result], _unreachable: dict[str, str],
                   record_property: Any, request: pytest.FixtureRequest) -> None:
        result = _read_once(host, (host.backend.hostname, name), _results, _unreachable,
                            lambda: read(host, context))
        # The one place waivers are decided (baomi.waivers), the same record the audit files.
        made = record(result, by_id[check_id], context.policy, context.groups, dt.date.today())
        results_plugin.remember(request.node, made)
        record_property("check", check_id)
        record_property("status", made.status)
        if check_id in result.evidence:
            record_property("evidence", result.evidence[check_id])
            print(f"{result.host} {check_id}: {result.evidence[check_id]}")
        if made.status == NOT_APPLICABLE:
            pytest.skip(f"{check_id}: not applicable: {made.reason}")
        if made.status == WAIVED:
            pytest.xfail(f"{check_id}: {made.reason}")
        findings = result.findings_of(check_id)
        assert not findings, "\n".join(filter(None, (report(findings), made.reason)))

    test_check.__doc__ = f"Each check of {name}, per host."
    parametrised: Callable[..., None] = pytest.mark.parametrize("check_id", params)(test_check)
    return parametrised
