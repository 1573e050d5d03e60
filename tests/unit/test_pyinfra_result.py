"""The reader of pyinfra's result, on runs captured from lab hosts (tests/unit/data/pyinfra/).

Each capture is one real run of ``deploy/baseline.py`` (``--only screen_lock``) through
``baomi.controller.pyinfra_child`` on lab ``ctl`` (srv1, srv2) and, where named, an inventory
host ``ghost`` on the lab's subnet where nothing listens: stdout, stderr, exit status and the
failed hosts pyinfra_child reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from baomi.controller.commands.offboard import host_outcomes
from baomi.controller.pyinfra_result import (
    CHANGED,
    FAILED,
    UNCHANGED,
    PyinfraOutputError,
    operations,
    read_payload,
)
from baomi.controller.runner import ApplyResult, interpret

DATA = Path(__file__).parent / "data" / "pyinfra"
TMOUT = "[screen_lock] /etc/profile.d/baomi-tmout.sh"
DROP_IN = "[screen_lock] /etc/ssh/sshd_config.d/50-baomi-screen-lock.conf"


def capture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def replay(name: str, *, hosts: tuple[str, ...] = ("ghost", "srv1", "srv2"),
           report: bool = True, stderr: list[str] | None = None) -> ApplyResult:
    run = capture(name)
    said = set(run["failed_hosts_report"]) if report and run["failed_hosts_report"] else None
    return interpret(run["stdout"], run["stderr"] if stderr is None else stderr, run["exit"],
                     said, dry=run["dry"], known_hosts=list(hosts))


def test_a_dry_run_names_the_unreachable_host_from_pyinfra_s_state() -> None:
    result = replay("dry-ghost")
    assert result.exit_code == 1 and result.failed == ["ghost"]
    assert result.hosts["ghost"].error.startswith("Could not connect (")
    assert result.hosts["srv1"].controls == {"screen_lock": "would change"}
    assert result.hosts["srv2"].controls == {"screen_lock": "would change"}
    assert not result.hosts["srv1"].error


def test_a_failure_status_that_names_no_host_calls_no_host_fine() -> None:
    # Without pyinfra's own list a dry document cannot say who failed; exit status 1 says
    # someone did, so every host is failed rather than one reported as fine by guess.
    result = replay("dry-ghost", report=False)
    assert result.exit_code == 1 and result.failed == ["ghost", "srv1", "srv2"]
    assert result.hosts["srv1"].error == "pyinfra exited 1: --> Disconnecting from hosts..."


def test_a_failed_operation_and_an_unreachable_host_are_read_from_the_results() -> None:
    result = replay("apply-ghost-srv2-fails")
    assert result.exit_code == 1 and result.failed == ["ghost", "srv2"]
    assert result.hosts["srv2"].controls == {"screen_lock": "failed"}
    # The text shown is what pyinfra printed for srv2 (sshd's own complaint), not a keyword.
    assert result.hosts["srv2"].error.startswith(
        "sshd rejected /etc/ssh/sshd_config.d/50-baomi-screen-lock.conf")
    assert result.hosts["srv1"].controls == {"screen_lock": "changed"}
    assert not result.hosts["srv1"].failed
    srv2 = {op.name: op for op in result.operations["srv2"]}
    assert srv2[TMOUT].outcome == CHANGED and srv2[DROP_IN].outcome == FAILED
    assert srv2[DROP_IN].error == result.hosts["srv2"].error and not srv2[TMOUT].error
    # pyinfra counts the operations a failed host never reached as errors too.
    assert srv2["[screen_lock] bootloader password"].outcome == FAILED
    assert "ghost" not in result.operations


def test_mended_then_unchanged() -> None:
    # The run after srv2's sshd_config was mended: srv2 installs the drop-in it failed on.
    first = replay("apply-mended", hosts=("srv1", "srv2"))
    assert first.exit_code == 0 and first.failed == []
    assert {h: r.controls for h, r in first.hosts.items()} == {
        "srv1": {"screen_lock": "unchanged"}, "srv2": {"screen_lock": "changed"}}
    assert [op.outcome for op in first.operations["srv2"]] == [UNCHANGED, CHANGED, UNCHANGED]
    again = replay("reapply-unchanged", hosts=("srv1", "srv2"))
    assert again.exit_code == 0
    assert {op.outcome for ops in again.operations.values() for op in ops} == {UNCHANGED}
    assert {h: r.controls for h, r in again.hosts.items()} == {
        "srv1": {"screen_lock": "unchanged"}, "srv2": {"screen_lock": "unchanged"}}


def test_what_a_host_prints_decides_nothing() -> None:
    run = capture("apply-mended")
    printed = [*run["stderr"], "    [srv1] Error: could not connect, refused, failed, timed out",
               "    [srv2] [srv1] Could not connect"]
    result = replay("apply-mended", hosts=("srv1", "srv2"), stderr=printed)
    assert result.exit_code == 0 and result.failed == []
    assert all(not r.error for r in result.hosts.values())


def test_a_run_that_stopped_before_its_result_fails_every_host() -> None:
    # An operation raised (srv2's /etc/profile.d is a file): pyinfra aborts the whole run,
    # prints no document and exits 1.  Nothing is "unchanged"; the reason is pyinfra's line.
    result = replay("apply-aborted")
    assert result.exit_code == 1 and result.failed == ["ghost", "srv1", "srv2"]
    assert result.hosts["srv1"].controls == {}
    assert result.hosts["srv2"].error == ("--> Operation error in src/gevent/greenlet.py line "
                                          "912: /etc/profile.d exists and is not a directory")
    assert result.hosts["ghost"].error.startswith("Could not connect (")


def test_no_reachable_host() -> None:
    result = replay("none-reachable", hosts=("ghost",))
    assert result.exit_code == 1 and result.failed == ["ghost"]
    assert result.hosts["ghost"].error.startswith("Could not connect (")


@pytest.mark.parametrize(("stdout", "code", "dry", "why"), [
    ("", 0, False, "exited 0 without its --json result"),
    ('{"plan": [', 0, False, "is not JSON"),
    ("[]", 0, False, "no 'plan' list"),
    ('{"plan": [], "results": null}', 0, False, "no 'results' with 'operations'"),
    ('{"plan": [{"op_hash": "h", "name": "[ssh] x", "hosts_with_change": "srv1"}]}', 1, True,
     "'hosts_with_change' is not a list of host names"),
    ('{"plan": [], "results": {"operations": [{"op_hash": "h", "name": "[ssh] x", '
     '"success": [1]}], "failed_hosts": []}}', 0, False, "'success' is not a list"),
])
def test_output_that_is_not_a_result_is_an_error_never_ok(stdout: str, code: int, dry: bool,
                                                             why: str) -> None:
    with pytest.raises(PyinfraOutputError) as raised:
        interpret(stdout, ["--> Disconnecting from hosts..."], code, set(), dry=dry,
                  known_hosts=["srv1"])
    assert why in raised.value.message
    assert raised.value.exit_code == 2
    assert raised.value.message.endswith("nothing is known about the hosts of this run")


def test_a_truncated_capture_is_an_error() -> None:
    run = capture("apply-mended")
    with pytest.raises(PyinfraOutputError):
        read_payload(run["stdout"][:-40], dry=False)


def test_offboarding_joins_its_plan_with_the_same_operations() -> None:
    result = replay("apply-ghost-srv2-fails")
    hashes = {op.name: op.op_hash for op in result.operations["srv2"]}
    plan = [{"hash": hashes[TMOUT], "user": "u", "phase": "freeze", "what": "tmout"},
            {"hash": hashes[DROP_IN], "user": "u", "phase": "freeze", "what": "drop-in"},
            {"hash": "not-run", "user": "u", "phase": "freeze", "what": "later"}]
    out = host_outcomes(result, {"srv1": plan, "srv2": plan}, dry=False)
    assert out["srv2"]["u"]["done"] == ["tmout"] and out["srv2"]["u"]["failed"] == ["drop-in"]
    assert out["srv1"]["u"]["done"] == ["tmout", "drop-in"] and out["srv1"]["u"]["already"] == []
    assert out["srv1"]["u"]["not_run"] == ["later"]
    mended = replay("apply-mended", hosts=("srv1", "srv2"))
    again = host_outcomes(mended, {"srv1": plan[:2]}, dry=False)["srv1"]["u"]
    assert again["already"] == ["tmout", "drop-in"] and again["done"] == []
    dry = replay("dry-ghost")
    dry_hashes = {op.name: op.op_hash for op in dry.operations["srv1"]}
    dry_plan = [{"hash": dry_hashes[TMOUT], "user": "u", "phase": "freeze", "what": "tmout"},
                {"hash": "unchanged", "user": "u", "phase": "freeze", "what": "held"}]
    got = host_outcomes(dry, {"srv1": dry_plan}, dry=True)["srv1"]["u"]
    assert got["would"] == ["tmout"] and got["already"] == ["held"]


def test_operations_in_pyinfra_s_order() -> None:
    payload = read_payload(capture("reapply-unchanged")["stdout"], dry=False)
    assert [op.name for op in operations(payload, dry=False)["srv2"]] == [
        TMOUT, DROP_IN, "[screen_lock] bootloader password"]
