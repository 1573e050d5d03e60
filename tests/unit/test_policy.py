"""The policy loader: every validation rule shows its message and its line number."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baomi.clauses import CLAUSES
from baomi.cli import main
from baomi.policy import PolicyError, load, load_text

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policy.yaml"
TODAY = dt.date(2026, 11, 23)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_text(textwrap.dedent(text), "p.yaml", today=TODAY)
    return [str(p) for p in info.value.problems]


def test_default_policy_loads_with_seed_values() -> None:
    policy = load(DEFAULT, today=TODAY)
    assert list(policy.levels) == ["秘密", "机密", "绝密"]
    assert policy.levels["绝密"].max_file_mode == 0o600
    assert policy.backup.interval_days == 7  # 每周
    assert policy.offboarding.delete_when == "end_of_following_month"  # 次月月底
    assert policy.offboarding.freeze_on_trigger is True
    assert [p.path for p in policy.sensitive_paths] == [
        "/srv/customers", "/srv/contracts", "/home/shared/clients"]


def test_default_file_matches_code_defaults() -> None:
    """The documented policy.yaml and the built-in defaults must not drift apart."""
    from_file = load(DEFAULT, today=TODAY)
    built_in = load_text("", today=TODAY)
    for section in ("levels", "disk_encryption", "usb", "screen_lock", "passwords", "ssh",
                    "accounts", "offboarding", "firewall", "audit_rules", "apps", "destruction",
                    "agent", "collector", "reporting", "marking", "core_dumps", "login_defaults",
                    "antivirus", "log_forwarding", "ssh_guard",
                    "kernel"):
        assert getattr(from_file, section) == getattr(built_in, section), section
    assert dataclasses.replace(from_file.backup, paths=()) == built_in.backup


def test_every_setting_in_the_default_file_is_commented() -> None:
    for number, line in enumerate(DEFAULT.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- path"):
            continue
        key, _, value = stripped.partition(":")
        if value.strip() and not value.strip().startswith("#") and key not in (
                "english", "severity", "max_file_mode", "max_dir_mode", "encryption", "audit",
                "retention_days", "level", "owner", "group", "groups"):
            assert "#" in value, f"policy.yaml:{number}: setting without a comment: {line}"


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    found = problems("""\
        screen_lok:
          idle_seconds: 300
        """)
    assert len(found) == 1
    assert found[0].startswith("p.yaml:1:1: policy: unknown key 'screen_lok'")
    assert "did you mean screen_lock?" in found[0]


def test_unknown_nested_key_suggests() -> None:
    found = problems("""\
        passwords:
          min_lenght: 14
        """)
    assert found == [
        "p.yaml:2:3: passwords: unknown key 'min_lenght' (did you mean min_length?); known "
        "keys: max_days, min_classes, min_days, min_length, warn_days"]


@pytest.mark.parametrize(("value", "line_col"), [("0", "2:17"), ("86400", "2:17")])
def test_idle_lock_out_of_range(value: str, line_col: str) -> None:
    found = problems(f"screen_lock:\n  idle_seconds: {value}\n")
    assert found == [f"p.yaml:{line_col}: screen_lock.idle_seconds: {value} is out of range; "
                     "allowed: a whole number from 60 to 3600 seconds"]


def test_wrong_type() -> None:
    found = problems("screen_lock:\n  idle_seconds: five minutes\n")
    assert found == ["p.yaml:2:17: screen_lock.idle_seconds: expected a whole number from 60 "
                     "to 3600 seconds, found text 'five minutes'; allowed: a whole number from "
                     "60 to 3600 seconds"]
    found = problems("usb:\n  audit_only: maybe\n")
    assert found[0].startswith("p.yaml:2:15: usb.audit_only: expected true or false")


def test_relative_path_and_undefined_level() -> None:
    found = problems("""\
        sensitive_paths:
          - path: srv/customers
            level: 机秘
        """)
    assert found[0] == ("p.yaml:2:11: sensitive_paths[0].path: 'srv/customers' is a relative "
                        "path; paths must be absolute, e.g. /srv/data")
    assert found[1] == ("p.yaml:3:12: sensitive_paths[0].level: '机秘' is not a defined level; "
                        "defined levels: 秘密, 机密, 绝密")


def test_duplicate_paths_name_the_first_line() -> None:
    found = problems("""\
        sensitive_paths:
          - {path: /srv/a, level: 秘密}
          - {path: /srv/b, level: 秘密}
          - {path: /srv/a/, level: 绝密}
        """)
    assert found == ["p.yaml:4:12: sensitive_paths[2].path: /srv/a is listed twice (first on "
                     "line 2); list each sensitive path once"]


def test_duplicate_keys_are_errors() -> None:
    found = problems("screen_lock:\n  idle_seconds: 300\n  idle_seconds: 600\n")
    assert found == ["p.yaml:3:3: screen_lock: 'idle_seconds' is given twice (first on line 2);"
                     " give each setting once"]


def test_waiver_rules() -> None:
    found = problems("""\
        waivers:
          - clause: R-USB
            hosts: [ws1]
            reason: scanner needs a stick
            expires: 2026-01-01
          - control: usb
            hosts: [ws2]
            reason: pilot
            expires: 2027-01-01
          - clause: R-XYZ
            hosts: [ws3]
            reason: r
            approver: 王经理
            expires: 2027-01-01
        """)
    assert ("p.yaml:2:5: waivers[0]: 'approver' is required; add 'approver:' to waivers[0]"
            in found)
    assert "p.yaml:6:5: waivers[1]: 'approver' is required; add 'approver:' to waivers[1]" in found
    assert any(f.startswith("p.yaml:10:13: waivers[2].clause: 'R-XYZ' is not allowed")
               for f in found)
    # An expired waiver is not a problem (it would stop every command the morning after).
    assert len(found) == 3


def test_expired_waiver_loads_with_a_warning() -> None:
    policy = load_text(textwrap.dedent("""\
        waivers:
          - clause: R-USB
            hosts: [ws1]
            reason: scanner needs a stick
            approver: 王经理
            expires: 2026-01-01
        """), "p.yaml", today=dt.date(2026, 11, 23))
    assert len(policy.waivers) == 1
    assert [str(w) for w in policy.warnings] == [
        "p.yaml:6:14: waivers[0].expires: 2026-01-01 is in the past (today is 2026-11-23): it "
        "no longer waives; renew the waiver with a future date or remove it"]


def test_valid_waiver_loads() -> None:
    policy = load_text(textwrap.dedent("""\
        waivers:
          - clause: R-USB
            hosts: [ws1]
            reason: card reader pilot
            approver: 李总
            expires: 2027-03-31
        """), today=TODAY)
    assert policy.waivers[0].expires == dt.date(2027, 3, 31)
    assert policy.waivers[0].approver == "李总"


def test_modes_must_be_quoted_and_never_world_accessible() -> None:
    found = problems("""\
        levels:
          秘密:
            max_file_mode: 0640
          绝密:
            max_file_mode: "0644"
        """)
    assert found[0] == ("p.yaml:3:20: levels.秘密.max_file_mode: the mode 0640 is written as a "
                        "number; write modes as quoted octal text, e.g. '0640'")
    assert found[1].startswith("p.yaml:5:20: levels.绝密.max_file_mode: 0644 gives access to "
                               "everyone")


def test_several_errors_are_reported_together_in_file_order() -> None:
    found = problems("""\
        passwords:
          min_length: 4
          max_days: 0
        ssh:
          password_authentication: true
        usb:
          allowed: ["0781-5567", "0781:5567:ok"]
        """)
    assert [f.split(":")[1] for f in found] == ["2", "3", "5", "7"]
    assert "is not a USB device id" in found[3]


def test_cross_field_rules() -> None:
    found = problems("passwords:\n  max_days: 30\n  min_days: 30\n")
    assert found == ["p.yaml:3:13: passwords.min_days: 30 is not below max_days 30; min_days "
                     "must be less than max_days"]


def test_collector_must_use_tls() -> None:
    found = problems("collector:\n  url: http://collector:8080\n")
    assert found[0].startswith("p.yaml:2:8: collector.url: 'http://collector:8080' is not an "
                               "https:// URL")


def test_yaml_syntax_error_has_a_position() -> None:
    found = problems("screen_lock:\n  idle_seconds: [300\n")
    assert found[0].startswith("p.yaml:3:1: not valid YAML")


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "p.yaml:1:1: the policy must be a mapping of sections, found a list; start with e.g. "
        "'levels:' or 'screen_lock:'"]


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load(tmp_path / "nope.yaml")
    assert "cannot read the policy: No such file or directory" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"organisation: ok\norganisation2: \xff\n")
    with pytest.raises(PolicyError) as info:
        load(bad)
    assert str(info.value).startswith(f"{bad}:2:1: the file is not UTF-8 text")


def test_usb_allow_list_forms() -> None:
    policy = load_text(textwrap.dedent("""\
        usb:
          allowed:
            - "0781:5567"
            - {id: "0951:1666:ABC123", description: 财务部 Kingston}
        """))
    assert [(d.vendor, d.product, d.serial) for d in policy.usb.allowed] == [
        ("0781", "5567", None), ("0951", "1666", "ABC123")]
    assert policy.usb.allowed[1].description == "财务部 Kingston"


# --- the command line -----------------------------------------------------------------------

def test_cli_check_ok_and_typo(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["policy", "check", str(DEFAULT)])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "policy.yaml"
    bad.write_text(DEFAULT.read_text(encoding="utf-8").replace("screen_lock:", "screen_lok:"),
                   encoding="utf-8")
    result = runner.invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == 2
    line = next(n for n, t in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1)
                if t.startswith("screen_lok:"))
    assert f"{bad}:{line}:1: policy: unknown key 'screen_lok' (did you mean screen_lock?)" in (
        result.output)


def test_cli_check_json(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("screen_lock:\n  idle_seconds: 0\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["policy", "check", "--json", str(bad)])
    assert result.exit_code == 2
    data = json.loads(result.output)
    assert data["ok"] is False
    assert data["problems"][0]["line"] == 2
    assert data["problems"][0]["column"] == 17


def test_explain_json_lists_all_19_clauses() -> None:
    result = CliRunner().invoke(main, ["policy", "explain", "--json", str(DEFAULT)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    ids = [row["clause"] for row in data["clauses"]]
    assert ids == list(CLAUSES)
    assert len(ids) == 19
    lock = next(r for r in data["clauses"] if r["clause"] == "R-LOCK")
    assert lock["title"] == "开机与屏保密码"
    assert lock["controls"][0]["settings"]["idle_seconds"] == 300
    assert lock["controls"][0]["deploy"] == "baomi.deploy.screen_lock"
    assert lock["controls"][0]["check"] == "baomi.checks.test_screen_lock"
    assert lock["enforced"] and lock["verified"]
    unserved = next(r for r in data["clauses"] if r["clause"] == "R-APP")
    assert not (unserved["enforced"] or unserved["verified"] or unserved["watched"])


def test_explain_table_shows_every_clause() -> None:
    result = CliRunner().invoke(main, ["policy", "explain", str(DEFAULT)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for clause_id in CLAUSES:
        assert clause_id in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("baomi, version ")


# --- property: never another exception -----------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("BAOMI_FUZZ_EXAMPLES", "300")),
                suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _assert_loads_or_policy_error(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml", today=TODAY)
    except PolicyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1
            assert problem.column >= 1
            assert str(problem).startswith("fuzz.yaml:")


@FUZZ
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_policy_error(text: str) -> None:
    _assert_loads_or_policy_error(text)


DEFAULT_LINES = DEFAULT.read_text(encoding="utf-8").splitlines()
REPLACEMENTS = st.sampled_from(["0", "-1", "true", "null", "[]", "{}", "'x'", "99999999",
                                "/rel", "rel/path", "2020-01-01", "[1, 2]", "\"0777\"", ":",
                                "- a", "&a", "*a", "!!binary AA==", "0x10", "1e9", "秘密"])


@FUZZ
@given(st.integers(min_value=0, max_value=len(DEFAULT_LINES) - 1), REPLACEMENTS,
       st.sampled_from(["value", "key", "indent", "delete", "duplicate"]))
def test_any_mutation_of_the_default_loads_or_raises_policy_error(
        index: int, replacement: str, how: str) -> None:
    lines = list(DEFAULT_LINES)
    line = lines[index]
    key, sep, _ = line.partition(":")
    if how == "value" and sep:
        lines[index] = f"{key}: {replacement}"
    elif how == "key" and sep:
        lines[index] = f"{key[:-1] or 'x'}{replacement}:{line.partition(':')[2]}"
    elif how == "indent":
        lines[index] = " " + line
    elif how == "delete":
        del lines[index]
    else:
        lines.insert(index, line)
    _assert_loads_or_policy_error("\n".join(lines))
