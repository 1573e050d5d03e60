"""Pure logic of the audit: waivers, the results model, scores, diff, JUnit and HTML output."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
from pathlib import Path

import pytest
from junit_check import validate

from baomi.controller.audit_html import html
from baomi.controller.audit_render import junit, matrix
from baomi.controls.contract import Check, Result
from baomi.findings import Finding
from baomi.policy import load_text
from baomi.results import Audit, AuditFileError, CheckResult, diff, overall, record, scores
from baomi.waivers import decide, stale

TODAY = dt.date(2026, 12, 2)
DEFAULT = Path(__file__).resolve().parents[2] / "policy.yaml"
POLICY = load_text(textwrap.dedent("""\
    waivers:
      - control: usb
        hosts: [workstations]
        reason: the scanner needs a stick
        approver: 王经理
        expires: 2027-03-01
      - clause: R-TLS
        hosts: [srv2]
        reason: legacy client
        approver: 李总
        expires: 2026-11-30
      - clause: R-BAK
        hosts: [nowhere]
        reason: migrated
        approver: 王经理
        expires: 2027-01-31
    """), "p.yaml", today=TODAY)
USB = Check("usb.rules", ("R-USB", "R-DEV"), "rules equal the policy's")
SSH = Check("ssh.ciphers", ("R-TLS",), "only approved ciphers")


def result(host: str, check: Check, failing: bool, na: str = "") -> Result:
    findings = (check.finding("/etc/usbguard/rules.conf", "the policy's rules", "missing"),) \
        if failing else ()
    return Result(check.control, host, (check,), findings, {check.id: na} if na else {},
                  {check.id: "looked at the rules"})


def test_expired_waiver_is_a_warning_not_an_error() -> None:
    assert [w.message for w in POLICY.warnings] == [
        "waivers[1].expires: 2026-11-30 is in the past (today is 2026-12-02): it no longer "
        "waives"]


def test_a_live_waiver_covers_a_group_and_a_control() -> None:
    d = decide(POLICY, "ws1", {"workstations"}, "usb.rules", ("R-USB",), TODAY)
    assert d.waived and d.waiver is not None and d.waiver.approver == "王经理"
    assert d.note() == "waived by 王经理 until 2027-03-01: the scanner needs a stick"
    assert not decide(POLICY, "srv1", {"servers"}, "usb.rules", ("R-USB",), TODAY).waiver


def test_an_expired_waiver_no_longer_waives_and_says_so() -> None:
    d = decide(POLICY, "srv2", {"servers"}, "ssh.ciphers", ("R-TLS",), TODAY)
    assert d.expired and not d.waived
    assert "expired on 2026-11-30" in d.note()
    # The day it expires it still waives; the day after it does not.
    assert decide(POLICY, "srv2", (), "ssh.ciphers", ("R-TLS",), dt.date(2026, 11, 30)).waived


def test_stale_waivers_are_live_ones_that_waived_nothing() -> None:
    assert [i for i, _ in stale(POLICY, used=[0], today=TODAY)] == [2]


def test_record_statuses_and_evidence() -> None:
    waived = record(result("ws1", USB, True), USB, POLICY, {"workstations"}, TODAY)
    assert waived.status == "waived" and waived.waiver and waived.waiver["approver"] == "王经理"
    assert waived.evidence[0] == {"subject": "/etc/usbguard/rules.conf",
                                  "expected": "the policy's rules", "found": "missing",
                                  "severity": "high"}
    assert waived.evidence[-1] == {"looked_at": "looked at the rules"}
    failed = record(result("srv2", SSH, True), SSH, POLICY, {"servers"}, TODAY)
    assert failed.status == "fail" and failed.waiver and failed.waiver["expired"]
    assert record(result("srv1", SSH, False), SSH, POLICY, (), TODAY).status == "pass"
    na = record(result("srv1", USB, False, na="not a workstation"), USB, POLICY, (), TODAY)
    assert (na.status, na.reason) == ("not applicable", "not a workstation")


def test_a_hosts_text_is_bounded_and_without_control_characters() -> None:
    check = Check("usb.rules", ("R-USB",), "t")
    f = Finding("usb.rules", ("R-USB",), "high", "a\x1b[31mb", "x", "y" * 5000)
    made = record(Result("usb", "h", (check,), (f,), {}), check, POLICY, (), TODAY)
    assert made.evidence[0]["subject"] == "a?[31mb"
    assert len(made.evidence[0]["found"]) < 1100 and "4000 more" in made.evidence[0]["found"]


def _audit(*rows: tuple[str, str, str]) -> Audit:
    return Audit([CheckResult(h, c, ("R-USB",) if c.startswith("usb") else ("R-TLS",), "t", s,
                              evidence=({"subject": "</script><b>x", "expected": "e",
                                         "found": "f"},))
                  for h, c, s in rows], organisation="甲公司", started="2026-12-02T10:00:00+00:00",
                 scope={"hosts": sorted({r[0] for r in rows}), "groups": {}})


def test_exit_status_scores_and_matrix() -> None:
    a = _audit(("srv1", "ssh.ciphers", "pass"), ("ws1", "usb.rules", "waived"),
               ("srv2", "ssh.ciphers", "fail"))
    assert a.exit_status() == 1
    assert scores(a.results, "clause")["R-TLS"]["score"] == 50
    assert scores(a.results, "host")["ws1"]["score"] == 100
    assert overall(scores(a.results, "host")) == 67  # 2 of 3 judged checks hold
    assert matrix(a) == {"srv1": {"R-TLS": "pass"}, "ws1": {"R-USB": "waived"},
                         "srv2": {"R-TLS": "fail"}}
    assert _audit(("srv1", "ssh.ciphers", "pass"), ("ws1", "usb.rules", "waived")
                  ).exit_status() == 0
    assert _audit(("srv1", "ssh.ciphers", "fail"), ("h", "usb.rules", "error")).exit_status() == 2
    assert _audit().exit_status() == 2  # nothing audited is not compliance


def test_the_document_round_trips_and_refuses_others() -> None:
    a = _audit(("srv1", "ssh.ciphers", "pass"))
    again = Audit.from_dict(json.loads(json.dumps(a.as_dict())), "a.json")
    assert again.results == a.results
    with pytest.raises(AuditFileError, match=r"b\.json: not a baomi audit"):
        Audit.from_dict({"results": []}, "b.json")
    bad = a.as_dict()
    bad["results"][0]["status"] = "great"
    with pytest.raises(AuditFileError, match=r"c.json: results\[0\]: .*'great'"):
        Audit.from_dict(bad, "c.json")


def test_diff_names_each_change() -> None:
    before = _audit(("srv1", "ssh.ciphers", "fail"), ("ws1", "usb.rules", "pass"))
    after = _audit(("srv1", "ssh.ciphers", "pass"), ("ws1", "usb.rules", "pass"),
                   ("srv3", "ssh.ciphers", "fail"))
    assert diff(before, after) == [
        {"host": "srv1", "check": "ssh.ciphers", "clauses": "R-TLS", "before": "fail",
         "after": "pass"},
        {"host": "srv3", "check": "ssh.ciphers", "clauses": "R-TLS", "before": "absent",
         "after": "fail"}]


def test_junit_is_valid_and_counts_right() -> None:
    a = _audit(("srv1", "ssh.ciphers", "pass"), ("ws1", "usb.rules", "waived"),
               ("srv2", "ssh.ciphers", "fail"), ("srv3", "ssh.ciphers", "error"))
    assert validate(junit(a)) == {"tests": 4, "failures": 1, "errors": 1, "skipped": 1}


def test_html_is_self_contained_and_escapes_what_hosts_print() -> None:
    page = html(_audit(("srv1", "ssh.ciphers", "fail")), "en")
    assert "甲公司" in page and "R-TLS" in page and "Encrypted transmission" in page
    # Only the two <script> elements of the page itself; a host's "</script>" stays data.
    assert page.count("</script>") == 2 and "\\u003c/script>" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "default-src 'none'" in page


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          ) -> None:
    from click.testing import CliRunner

    from baomi.cli import main

    monkeypatch.setenv("BAOMI_STATE_DIR", str(tmp_path / "state"))
    inventory = tmp_path / "inventory.py"
    inventory.write_text("servers = [('srv1', {'ssh_hostname': '10.0.0.1'})]\n")
    runner = CliRunner()
    cases = {
        ("audit",): "give -i INVENTORY",
        ("audit", "-i", str(tmp_path / "none.py")): "no such inventory file",
        ("audit", "-i", str(inventory), "--limit", "nosuch"): "--limit nosuch: neither a host",
        ("audit", "-i", str(inventory)): "srv1: no ssh_known_hosts_file",
        ("audit", "diff", str(tmp_path / "a.json"), str(inventory)): "cannot read",
        ("audit", "diff", str(inventory), str(inventory)): "not JSON",
        ("audit", "history"): "not logged in",
        ("audit", "history", "--report", str(tmp_path / "nope")): "no such folder",
    }
    for args, words in cases.items():
        done = runner.invoke(main, [*args, "--policy", str(DEFAULT)] if args == ("audit",)
                             else list(args))
        assert done.exit_code == 2, (args, done.output)
        assert words in done.output and "Traceback" not in done.output, (args, done.output)


def test_progress_lines_are_found_after_pytests_status_letters() -> None:
    """A child's stdout: pytest -q's status letters are not ended by a newline, so each
    progress line but the first follows one ("s@@baomi {...}"); every one counts."""
    import io

    from baomi.controller.audit_run import Child, Progress, _pump

    out = io.StringIO('@@baomi {"collected": 3}\n'
                      '@@baomi {"host": "srv1", "check": "a.b", "status": "pass"}\n'
                      '.@@baomi {"host": "srv1", "check": "a.c", "status": "fail"}\n'
                      'F@@baomi {"host": "srv1", "check": "a.d", "status": "not applicable"}\n'
                      's\n1 failed, 1 passed, 1 skipped in 0.1s\n')
    progress = Progress()
    child = Child(["srv1"], Path("unused.json"), None)  # type: ignore[arg-type]
    _pump(out, child, progress)
    assert (progress.total, progress.done) == (3, 3)
    assert progress.by_status == {"pass": 1, "fail": 1, "not applicable": 1}
    assert child.output == ["s", "1 failed, 1 passed, 1 skipped in 0.1s"]
