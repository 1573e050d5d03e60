"""R-LOG forwarding: the pure parts, on output captured from lab avx (srv1, srv2 -> col1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from baomi.controls import log_forwarding as core
from baomi.controls.contract import NOT_APPLICABLE, HostContext, evaluate
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "log_forwarding"
POLICY = load_text((DATA / "policy.yaml").read_text(encoding="utf-8"))


def _run(host: str, groups: tuple[str, ...], capture: str,
         **change: object) -> tuple[core.Desired, core.Observed]:
    want = core.desired(HostContext.of(POLICY, groups, host))
    seen = core.parse((DATA / capture).read_text(encoding="utf-8"), want)
    return want, dataclasses.replace(seen, **change) if change else seen


def test_the_log_host_receives_and_the_others_forward_over_tls_with_a_disk_queue() -> None:
    receiver = core.desired(HostContext.of(POLICY, ("collector",), "col1"))
    sender = core.desired(HostContext.of(POLICY, ("servers",), "srv1"))
    assert receiver.receiver and receiver.conf_path == core.RECEIVE_FILE
    assert 'StreamDriver.AuthMode="x509/certvalid"' in receiver.conf
    assert 'input(type="imtcp" port="6514"' in receiver.conf
    assert 'target="col1" port="6514"' in sender.conf
    assert 'StreamDriverAuthMode="x509/name"' in sender.conf
    assert 'queue.filename="baomi_forward"' in sender.conf
    assert 'queue.maxDiskSpace="1024m"' in sender.conf
    assert 'action.resumeRetryCount="-1"' in sender.conf
    assert f'File="{core.AUDIT_LOG}"' in sender.conf


def test_a_silent_sender_and_a_stopped_receiver_are_named() -> None:
    want, seen = _run("col1", ("collector",), "applied_col1.out")
    assert not evaluate(core.CONTROL, "col1", want, seen).findings
    silent = dict(seen.received, **{"10.213.59.12": 20 * 60, "10.213.59.99": None})
    result = evaluate(core.CONTROL, "col1", want, dataclasses.replace(seen, received=silent))
    found = {f.subject: f.found for f in result.findings_of(core.RECEIVED.id)}
    assert found == {"/var/log/baomi-remote/10.213.59.12": "last message 20 min ago",
                     "/var/log/baomi-remote/10.213.59.99": "nothing ever"}
    want, stopped = _run("col1", ("collector",), "stopped_col1.out")
    result = evaluate(core.CONTROL, "col1", want, stopped)
    assert {f.check for f in result.findings} >= {core.RUNNING.id, core.LISTENING.id}


def test_a_sender_skips_the_receiving_checks_with_the_reason() -> None:
    want, seen = _run("srv2", ("servers",), "applied_srv2.out")
    result = evaluate(core.CONTROL, "srv2", want, seen)
    assert not result.findings
    assert result.status(core.RECEIVED.id) == NOT_APPLICABLE
    assert "forwards to col1" in result.not_applicable[core.RECEIVED.id]
    assert result.evidence[core.TARGET.id] == "col1:6514 is 10.213.59.13"


def test_without_a_log_host_the_control_is_not_applicable() -> None:
    want = core.desired(HostContext.of(load_text(""), ("servers",), "srv1"))
    assert "log_forwarding.host is not set" in (core.not_applicable(want) or "")
