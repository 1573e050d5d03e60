"""R-PRV accounts core: request validation, coverage, parser on lab output, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baomi.controls import accounts as core
from baomi.controls import explain
from baomi.controls.contract import HostContext, evaluate
from baomi.policy import Policy, load_text
from baomi.records import append_jsonl

DATA = Path(__file__).parent / "data" / "accounts"
POLICY = load_text("")


def req(user: str, hosts: tuple[str, ...] = ()) -> core.Request:
    return core.Request(user, "head.sales", "vp.ops", "2026-11-23T09:00:00Z", hosts)


def test_request_needs_a_requester_and_another_approver() -> None:
    assert core.problems(req("dave")) == []
    assert core.problems(core.Request("dave", "head", "head", "t")) == [
        "the requester cannot approve their own request"]
    assert core.problems(core.Request("a;b", "", " ", "t")) == [
        "'a;b' is not a valid POSIX user name",
        "the requester (the department head, 部门主管) is missing",
        "the approver (the senior approval, 分管副总) is missing"]


def test_requests_round_trip_and_invalid_lines_are_ignored() -> None:
    import json

    text = "\n".join([json.dumps(req("dave", ("srv1",)).as_dict()), "not json",
                      json.dumps({"user": "eve", "requester": "x", "approver": "x",
                                  "time": "t"})])
    assert core.parse_requests(text) == [req("dave", ("srv1",))]


def want(policy: Policy = POLICY, requests: list[Any] | None = None,
         host: str = "srv2") -> core.Desired:
    return core.desired(HostContext.of(policy, {"servers"}, host,
                                       account_requests=requests or []))


def test_parse_and_compare_on_a_lab_host() -> None:
    seen = core.parse((DATA / "srv2.out").read_text(encoding="utf-8"), want())
    assert seen.accounts["root"] == 0 and seen.accounts["nobody"] == 65534
    personal = {n for n, u in seen.accounts.items() if 1000 <= u < 65534
                and not n.startswith("baomi-retired-")}
    assert "dave" in personal
    findings = core.compare(want(), seen)
    assert {f.check for f in findings} == {"accounts.recorded"}
    subjects = {f.subject.split()[1] for f in findings}
    assert subjects == personal  # root, system accounts, nobody, placeholders: never listed
    assert str(next(f for f in findings if "dave" in f.subject)) == (
        "[R-PRV 权限审批] account dave (UID 1003): expected a recorded request (部门主管) and "
        "approval (分管副总), found no record")
    covered = want(requests=[req(n) for n in personal])
    assert core.compare(covered, seen) == []
    only_srv1 = want(requests=[req("dave", ("srv1",))])
    assert "dave" in {f.subject.split()[1] for f in core.compare(only_srv1, seen)}
    relaxed = want(load_text("accounts:\n  require_approval: false\n"))
    assert core.compare(relaxed, seen) == []
    assert core.CONTROL.not_applicable(relaxed) == "policy accounts.require_approval is false"


def test_requests_come_from_the_context_as_records_or_requests() -> None:
    """The controller hands its records over as they are stored (JSON objects) or parsed;
    invalid ones cover nothing, the latest request for a user wins, other hosts' do not count."""
    stored = [req("dave").as_dict(), {"user": "zed", "requester": "x", "approver": "x",
                                      "time": "t"}, ["not", "a", "record"],
              req("amy", ("srv1",)), {**req("dave").as_dict(), "ticket": "IT-2"}]
    assert want(requests=stored) == core.Desired(
        (core.Request("dave", "head.sales", "vp.ops", "2026-11-23T09:00:00Z", (), "IT-2"),),
        1000, True)
    assert core.desired(HostContext.of(POLICY, set(), "srv2")).create == ()


def test_a_host_without_personal_accounts_is_not_applicable() -> None:
    seen = core.Observed({"root": 0, "daemon": 1, "nobody": 65534, "baomi-retired-1000": 1000})
    result = evaluate(core.CONTROL, "srv9", want(host="srv9"), seen)
    assert result.status("accounts.recorded") == "not applicable"
    assert result.not_applicable["accounts.recorded"] == \
        "no personal account (UID ≥ 1000) on this host"


def test_policy_explain_shows_r_prv_served() -> None:
    row = next(r for r in explain(POLICY) if r["clause"] == "R-PRV")
    assert row["enforced"] and row["verified"]
    assert row["controls"][0]["deploy"] == "baomi.deploy.accounts"
    assert row["controls"][0]["check"] == "baomi.checks.test_accounts"


def test_a_revocation_withdraws_earlier_requests_and_a_new_request_grants_again(
        tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    append_jsonl(path, [req("alice").as_dict(), req("bob").as_dict()])
    revoked = core.revoke("alice", "hr.li", "OFF-7", "purged", path=path)
    assert (revoked.user, revoked.by, revoked.ticket) == ("alice", "hr.li", "OFF-7")
    assert [r.user for r in core.load_requests(path)] == ["bob"]
    ctx = HostContext.of(load_text(""), {"servers"}, "srv1",
                         **{core.INPUT: [req("alice").as_dict(), revoked.as_dict()]})
    assert core.desired(ctx).create == ()  # records as stored: the revocation is honoured
    append_jsonl(path, [req("alice").as_dict()])  # rehired: a new request after it
    assert [r.user for r in core.load_requests(path)] == ["bob", "alice"]
    # A revocation missing its ticket still revokes (the safe side) when read.
    append_jsonl(path, [{"action": "revoke", "user": "bob"}])
    assert [r.user for r in core.load_requests(path)] == ["alice"]
    for bad, message in ((("alice", " ", "T"), "who revokes (--by)"),
                         (("alice", "hr", ""), "the ticket"),
                         (("-x", "hr", "T"), "not a valid POSIX user name")):
        try:
            core.revoke(*bad, path=path)
        except ValueError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{bad} was recorded")


def test_account_revoke_command(tmp_path: Path, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from baomi.cli import main

    monkeypatch.setenv("BAOMI_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    none = runner.invoke(main, ["account", "revoke", "alice", "--ticket", "T", "--by", "hr"])
    assert none.exit_code == 2 and "no request in force for alice" in none.output
    made = runner.invoke(main, ["account", "request", "alice", "--requester", "head",
                                "--approver", "vp"])
    assert made.exit_code == 0, made.output
    done = runner.invoke(main, ["account", "revoke", "alice", "--ticket", "OFF-1", "--by", "hr"])
    assert done.exit_code == 0 and "revoked: alice by hr (ticket OFF-1)" in done.output
    assert runner.invoke(main, ["account", "list"]).output == ""
    missing = runner.invoke(main, ["account", "revoke", "alice", "--by", "hr"])
    assert missing.exit_code == 2 and "--ticket" in missing.output
