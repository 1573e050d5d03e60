"""The checks' shared fixtures and the one generic check runner.

Each ``checks/test_<control>.py`` is one line, ``test_check = control_checks("<control>")``:
a test per (host, check ID) of the control, tagged with the check's clauses.  The control runs
once per host through :func:`baomi.controls.contract.run` (desired → observe over testinfra →
parse → compare); each test then reports its own check: failed with the findings' evidence,
skipped with the reason when not applicable, passed otherwise.

Reading is concurrent (:class:`Readings`): when the first check of a session needs a reading,
every host of the session gets one ssh connection first (its ControlMaster, or the reason it
cannot be reached), then every control of every host is read at once by a bounded pool of
threads, each its own ``ssh`` client over the host's master (``--baomi-readers``, 8 by
default; at most :data:`PER_HOST` at once on one host).  The checks then take their control's
reading in pytest's order.  What each control reads and how its checks judge it is exactly as
when read one after another (``--baomi-readers 1``).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    group.addoption("--baomi-readers", type=int, default=8, metavar="N",
                    help="controls read at once (ssh clients over the hosts' masters; default 8,"
                    " 1 reads one after another)")
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


class Contexts:
    """Each host's :class:`HostContext`, made once per session (as the ``context`` fixture)."""

    def __init__(self, policy: Policy, inventory_groups: dict[str, set[str]]) -> None:
        self.policy = policy
        self.groups = inventory_groups
        self.made: dict[str, HostContext] = {}

    def of(self, host: Any) -> HostContext:
        name = host.backend.hostname
        if name not in self.made:
            if name not in self.groups:
                pytest.fail(f"host {name} is not in the inventory; its groups are unknown")
            self.made[name] = HostContext.of(self.policy, self.groups[name], name)
        return self.made[name]


def observe(host: Any, script: str) -> str:
    """Run a control's read-only observe script on the host and return its output."""
    result = host.run(f"sh -c {shlex.quote(script)}")
    if result.rc != 0:
        pytest.fail(f"observe script failed on {host.backend.hostname} (rc {result.rc}): "
                    f"{result.stderr.strip()[-300:]}")
    return str(result.stdout)


def _reason(exc: RuntimeError) -> str:
    """ssh's own last line from testinfra's error (ssh exited 255: it could not connect)."""
    out = exc.args[0] if exc.args else exc
    return (str(getattr(out, "stderr", "")).strip() or str(out)).splitlines()[-1][:300]


class Unreachable(Exception):
    """The host's first connection failed; the message is ssh's reason."""


Reader = Callable[[Any, HostContext], Result]
# Sessions at once over one host's master: sshd refuses more than its MaxSessions (10 by
# default; hardening guides allow lower, 4 is common) and ssh would then fail like an
# unreachable host.
PER_HOST = 4


class Readings:
    """Every (host, control) of the session read concurrently, as futures of their Results.

    Each host is connected once first (``true`` over ssh: its ControlMaster comes up, so the
    concurrent clients after it share one master instead of racing to become it); a host
    ssh cannot reach is recorded with ssh's reason and none of its controls is run.  The
    controls are submitted control by control (the order pytest runs the checks in), so the
    first checks can report while later readings are still under way.
    """

    def __init__(self, readers: int, contexts: Contexts) -> None:
        self.workers = max(1, readers)
        self.contexts = contexts
        self.futures: dict[tuple[str, str], Future[Result]] = {}
        # Each control is observed once per host in a session (its checks share the reading).
        self.results: dict[tuple[str, str], Result] = {}
        # Hosts ssh could not reach (exit 255), with ssh's reason: their other checks end at
        # once as errors instead of each waiting for its own connection timeout.
        self.unreachable: dict[str, str] = {}
        self._lock = threading.Lock()
        self._connect = ThreadPoolExecutor(self.workers, thread_name_prefix="baomi-connect")
        self._read = ThreadPoolExecutor(self.workers, thread_name_prefix="baomi-read")

    def start(self, hosts: dict[str, tuple[Any, HostContext]],
              controls: dict[str, Reader]) -> None:
        connected = {name: self._connect.submit(self._connect_one, name, host)
                     for name, (host, _ctx) in hosts.items()}
        sessions = {name: threading.Semaphore(PER_HOST) for name in hosts}
        for control, read in controls.items():
            for name, (host, ctx) in hosts.items():
                self.futures[(name, control)] = self._read.submit(
                    self._read_one, connected[name], sessions[name], read, host, ctx)

    def _connect_one(self, name: str, host: Any) -> str | None:
        try:
            host.run("true")
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            with self._lock:
                self.unreachable[name] = _reason(exc)
            return self.unreachable[name]
        return None

    @staticmethod
    def _read_one(connected: Future[str | None], sessions: threading.Semaphore, read: Reader,
                  host: Any, ctx: HostContext) -> Result:
        why = connected.result()
        if why is not None:
            raise Unreachable(why)
        with sessions:
            return read(host, ctx)

    def close(self) -> None:
        self._read.shutdown(wait=True, cancel_futures=True)
        self._connect.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def _readings(request: pytest.FixtureRequest, policy: Policy,
              inventory_groups: dict[str, set[str]]) -> Any:
    """The session's readings (and hosts' contexts), started at the first check that needs one.

    The checks ask for this one session fixture only: pytest's set-up of each fixture a test
    names was a good part of a check's cost, × (hosts × checks)."""
    contexts = Contexts(policy, inventory_groups)
    hosts: dict[str, tuple[Any, HostContext]] = {}
    controls: dict[str, Reader] = {}
    for item in request.session.items:
        spec = getattr(getattr(item, "callspec", None), "params", {})
        target = getattr(getattr(item, "function", None), "baomi_reader", None)
        host = spec.get("_testinfra_host")
        if target is None or host is None:
            continue
        name = host.backend.hostname
        controls.setdefault(*target)
        if name in inventory_groups and name not in hosts:  # others fail in their checks
            hosts[name] = (host, contexts.of(host))
    readings = Readings(int(request.config.getoption("baomi_readers")), contexts)
    readings.start(hosts, controls)
    yield readings
    readings.close()


def _read_once(key: tuple[str, str], readings: Readings, read: Callable[[], Result]) -> Result:
    """The reading of control ``key[1]`` on host ``key[0]``: the pool's, or ``read()`` when the
    pool has none (a check outside :func:`host_checks`)."""
    name = key[0]
    results, unreachable = readings.results, readings.unreachable
    if name in unreachable:
        pytest.fail(f"{name} could not be reached: {unreachable[name]}", pytrace=False)
    if key not in results:
        future = readings.futures.get(key)
        try:
            results[key] = future.result() if future is not None else read()
        except Unreachable as exc:
            unreachable[name] = str(exc)
            pytest.fail(f"{name} could not be reached: {unreachable[name]}", pytrace=False)
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            unreachable[name] = _reason(exc)
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

    def test_check(check_id: str, host: Any, _readings: Readings,
                   request: pytest.FixtureRequest) -> None:
        context = _readings.contexts.of(host)  # as the `context` fixture, made once per host
        result = _read_once((host.backend.hostname, name), _readings,
                            lambda: read(host, context))
        # The one place waivers are decided (baomi.waivers), the same record the audit files.
        made = record(result, by_id[check_id], context.policy, context.groups, dt.date.today())
        results_plugin.remember(request.node, made)
        properties = request.node.user_properties  # what pytest's record_property appends to
        properties += [("check", check_id), ("status", made.status)]
        if check_id in result.evidence:
            properties.append(("evidence", result.evidence[check_id]))
            print(f"{result.host} {check_id}: {result.evidence[check_id]}")
        if made.status == NOT_APPLICABLE:
            pytest.skip(f"{check_id}: not applicable: {made.reason}")
        if made.status == WAIVED:
            pytest.xfail(f"{check_id}: {made.reason}")
        findings = result.findings_of(check_id)
        if findings:
            # The findings are the whole story: no traceback of this function (pytest's
            # formatting of one took ~20 ms of CPU per failed check).
            pytest.fail("\n".join(filter(None, (report(findings), made.reason))),
                        pytrace=False)

    test_check.__doc__ = f"Each check of {name}, per host."
    test_check.baomi_reader = (name, read)  # type: ignore[attr-defined]  # for _readings
    parametrised: Callable[..., None] = pytest.mark.parametrize("check_id", params)(test_check)
    return parametrised
