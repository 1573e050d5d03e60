"""passwords (R-PWD): parser, compare and repair scripts on output captured from a lab host.

The captures (tests/unit/data/passwords/, srv3 of a lab, see each test) hold alice (a password),
bob (none: key-only), carol (locked), svc (uid 1005, nologin), dave (expired: chage -E 0) and,
in the fresh one, eve (an empty password).  The shell the deploy runs (sed, awk) is run here
for real on copies of the captured files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from baomi import pwquality as pwq
from baomi.controls import passwords as core
from baomi.controls.contract import HostContext, evaluate
from baomi.fixes import passwords as fix
from baomi.observe import sections
from baomi.policy import load_text

DATA = Path(__file__).parent / "data" / "passwords"
POLICY = load_text("")
WANT = core.desired(HostContext.of(POLICY, {"servers"}, "srv3"))


def text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def observed(name: str) -> core.Observed:
    return core.parse(text(name), WANT)


def report(seen: core.Observed, want: core.Desired = WANT) -> str:
    return "\n".join(str(f) for f in core.compare(want, seen))


def test_no_password_hash_in_any_capture() -> None:
    for path in DATA.glob("*.out"):
        body = path.read_text(encoding="utf-8")
        # crypt(3) hashes: $id$..., yescrypt $y$...; none may leave the host.
        assert not re.search(r"\$(1|2[abxy]?|5|6|y|gy|7)\$", body), path.name
        shadow = sections(body)["shadow"].out.splitlines()
        assert shadow and all(line.split(":")[1] in ("set", "empty", "none", "locked")
                              for line in shadow), path.name


@pytest.mark.parametrize(("entry", "status"), [
    ("alice:$y$j9T$abc$defghijklmnopq:20000:0:99999:7:::", "set"),
    ("carol:!$y$j9T$abc$defghijklmnopq:20000:0:99999:7:::", "locked"),
    ("bob:!:20000:0:99999:7:::", "none"),
    ("svc:*:20000::::::", "none"),
    ("old:!!:20000::::::", "none"),
    ("lk:!*:20000::::::", "none"),
    ("eve::20000:0:99999:7:::", "empty"),
    ("dave:$6$salt$hash:20000:1:90:7::0:", "set"),
])
def test_shadow_awk_prints_status_never_the_hash(entry: str, status: str) -> None:
    command = core.SHADOW_AWK.removeprefix("awk ")
    out = subprocess.run(["sh", "-c", f"awk {command}"], input=entry + "\n",
                         capture_output=True, text=True, check=True).stdout.rstrip("\n")
    name, *fields = entry.split(":")
    assert out == ":".join([name, status, *fields[1:7]])  # shadow fields 3-8
    assert "$" not in out


def test_fresh_host_is_reported_with_evidence() -> None:
    seen = observed("fresh_srv3.out")
    assert seen.lib_values is not None and seen.lib_values["minlen"] == 8
    assert seen.dict_present and seen.dictpath == "/var/cache/cracklib/cracklib_dict"
    text_ = report(seen)
    assert "[R-PWD 密码策略] /etc/security/pwquality.conf.d/50-baomi.conf: expected the baomi " \
           "content, found missing" in text_
    assert "pam_pwquality minlen: expected at least 12, found 8 (the built-in default)" in text_
    assert "pam_pwquality minclass: expected at least 3, found 0 (the built-in default)" in text_
    assert "/etc/login.defs PASS_MAX_DAYS: expected 90, found 99999 (line 165)" in text_
    assert "/etc/login.defs PASS_MIN_DAYS: expected 1, found 0 (line 166)" in text_
    assert "PASS_WARN_AGE" not in text_  # Debian's 7 is the policy's 7
    assert "account alice (uid 1000): expected password ageing min 1, max 90, warn 7 days, " \
           "found min 0, max 99999, warn 7 days" in text_
    empty = [f for f in core.compare(WANT, seen) if "empty password" in f.found]
    assert [(f.subject, f.severity, f.check) for f in empty] == [
        ("account eve (uid 1007)", "critical", "passwords.empty_password")]
    assert {f.check for f in core.compare(WANT, seen)} == {
        "passwords.dropin", "passwords.min_length", "passwords.min_classes",
        "passwords.login_defs", "passwords.account_ageing", "passwords.empty_password"}
    # Accounts out of scope are listed, but the ageing checks still apply (alice, eve).
    assert core.skipped(WANT, seen) == {}
    for name in ("bob", "carol", "svc", "dave", "nobody", "root"):
        assert f"account {name} " not in text_
    assert core.out_of_scope(WANT, seen) == [
        "nobody (uid 65534): the unprivileged placeholder account",
        "bob (uid 1001): no password (key-only or never set); password ageing does not apply",
        "carol (uid 1002): password locked",
        "svc (uid 1005): no login shell (/usr/sbin/nologin)",
        "dave (uid 1006): account expired (frozen) on 1970-01-01",
    ]
    assert fix.ageing_commands(WANT, seen) == ["chage -m 1 -M 90 -W 7 alice",
                                                "chage -m 1 -M 90 -W 7 eve"]
    assert fix.neutralise_script(seen, WANT) == ""
    assert not fix.pam_needs_change(WANT, seen)


def test_applied_host_is_compliant() -> None:
    seen = observed("applied_srv3.out")
    assert seen.dropin == WANT.dropin
    assert core.compare(WANT, seen) == []
    alice = next(a for a in seen.accounts if a.name == "alice")
    assert (alice.min_days, alice.max_days, alice.warn_days) == (1, 90, 7)
    assert fix.ageing_commands(WANT, seen) == []
    assert fix.login_defs_script(WANT, seen) == ""
    assert core.effective(seen)["minlen"] == pwq.Effective(12, f"{core.DROPIN}:2")


def test_tampering_is_named_file_line_and_argument() -> None:
    """srv3 after apply: main file minlen = 8, 90-local.conf minclass = 1 and dcredit = 2,
    'enforcing=0' on the PAM line, a second PASS_MAX_DAYS 99999, chage -M 99999 alice."""
    seen = observed("tampered_srv3.out")
    text_ = report(seen)
    assert "pam_pwquality minlen: expected at least 12, found 8 " \
           "(/etc/security/pwquality.conf:80)" in text_
    assert "pam_pwquality minclass: expected at least 3, found 1 " \
           "(/etc/security/pwquality.conf.d/90-local.conf:1)" in text_
    assert "pam_pwquality dcredit: expected 0 or less (no length credit), found 2 " \
           "(/etc/security/pwquality.conf.d/90-local.conf:2)" in text_
    assert "pam_pwquality enforcing: expected 1 (weak passwords refused), found 0 " \
           "(/etc/pam.d/common-password:25 argument enforcing=0)" in text_
    assert "/etc/login.defs PASS_MAX_DAYS: expected 90, found 99999 (line 403)" in text_
    assert "account alice (uid 1000): expected password ageing min 1, max 90, warn 7 days, " \
           "found min 1, max 99999, warn 7 days" in text_
    assert fix.neutralise_script(seen, WANT) == "; ".join(
        f"sed -i '{n}s/^/# disabled by baomi (R-PWD): /' {path}" for n, path in (
            (1, "/etc/security/pwquality.conf.d/90-local.conf"),
            (2, "/etc/security/pwquality.conf.d/90-local.conf"),
            (80, "/etc/security/pwquality.conf")))
    assert fix.pam_weak_args(WANT, seen) == ["enforcing"]
    assert fix.ageing_commands(WANT, seen) == ["chage -m 1 -M 90 -W 7 alice"]


def test_library_reading_wins_and_files_are_the_fallback() -> None:
    """Without python3 on the host the files are read the way libpwquality reads them."""
    body = text("tampered_srv3.out")
    start = body.index("==> pwq_lib\n")
    end = body.index("<== pwq_lib rc=0") + len("<== pwq_lib rc=0")
    without = core.parse(body[:start] + "==> pwq_lib\n\n<== pwq_lib rc=3" + body[end:], WANT)
    assert without.lib_values is None
    with_lib = core.effective(observed("tampered_srv3.out"))
    assert core.effective(without) == with_lib
    assert core.compare(WANT, without) == core.compare(WANT, observed("tampered_srv3.out"))


def test_a_malformed_line_stops_the_reading() -> None:
    """srv3 with 10-bad.conf 'foo = 1', the dictionary moved away, the PAM line deleted."""
    seen = observed("broken_srv3.out")
    assert seen.lib_rc == -5  # PWQ_ERROR_UNKNOWN_SETTING, from the library itself
    text_ = report(seen)
    assert "pwquality /etc/security/pwquality.conf.d/10-bad.conf:1: expected a valid setting, " \
           "found 'foo = 1': libpwquality stops reading there (files not read: " \
           "/etc/security/pwquality.conf.d/50-baomi.conf, " \
           "/etc/security/pwquality.conf.d/90-local.conf, /etc/security/pwquality.conf)" in text_
    assert "pam_pwquality minlen: expected at least 12, found 8 (the built-in default)" in text_
    assert "pam_pwquality dictionary: expected /var/cache/cracklib/cracklib_dict.pwd (package " \
           "cracklib-runtime) or dictcheck = 0, found missing: every password change by a " \
           "user is refused" in text_
    assert "/etc/pam.d/common-password: expected an active 'password requisite " \
           "pam_pwquality.so' line before pam_unix.so, found no pam_pwquality.so line" in text_
    assert fix.neutralise_script(seen, WANT) == \
        "sed -i '1s/^/# disabled by baomi (R-PWD): /' " \
        "/etc/security/pwquality.conf.d/10-bad.conf"
    assert fix.pam_script(WANT, seen).startswith("set -e; pam-auth-update --enable pwquality;")
    assert core.dictionary_missing(seen)
    assert fix.dictionary_script(seen).startswith("update-cracklib; ")


@pytest.mark.parametrize(("line", "key", "value"), [
    # Each checked against libpwquality 1.4.5 on a lab host (rc of pwquality_read_config).
    ("minlen = 6", "minlen", "6"),
    ("minlen=6", "minlen", "6"),
    ("minlen 6", "minlen", "6"),
    ("minlen==6", "minlen", "6"),
    ("  MINLEN = 6   # comment", "minlen", "6"),
    ("enforce_for_root", "enforce_for_root", ""),
    ("usersubstr = 3", "usersubstr", "3"),
    ("foo = 1", None, None),
    ("minlen = abc", None, None),
    ("minlen = = 6", None, None),
    ("minlen", None, None),
])
def test_pwquality_line_syntax(line: str, key: str | None, value: str | None) -> None:
    reading = pwq.read_pwquality({pwq.PWQ_CONF: line + "\nminclass = 2\n"})
    if key is None:
        assert reading.error is not None and reading.settings == ()
    else:
        assert reading.error is None
        assert (reading.settings[0].key, reading.settings[0].value) == (key, value)
        assert reading.settings[1].key == "minclass"


def test_read_order_is_dropins_by_bytes_then_main_file() -> None:
    d = pwq.PWQ_DIR
    files = {pwq.PWQ_CONF: "minlen = 14\n", f"{d}/90-z.conf": "minlen = 9\n",
             f"{d}/50-baomi.conf": WANT.dropin, f"{d}/A.conf": "minlen = 7\n",
             f"{d}/x.conf.conf": "minlen = 6\n", f"{d}/.conf": "minclass = 4\n"}
    assert pwq.read_order(files) == [f"{d}/.conf", f"{d}/50-baomi.conf", f"{d}/90-z.conf",
                                      f"{d}/A.conf", pwq.PWQ_CONF]
    seen = observed("applied_srv3.out")
    stricter = core.Observed(**{**seen.__dict__, "pwq_files": files, "lib_values": None})
    # The main file is read last: its stricter minlen is compliant (the policy is a minimum).
    assert core.effective(stricter)["minlen"] == pwq.Effective(14, f"{pwq.PWQ_CONF}:1")
    assert core.compare(WANT, stricter) == []


def after_unix(pam: str) -> str:
    """The PAM file with the pam_pwquality line moved below the pam_unix line."""
    lines = pam.split("\n")
    q = next(i for i, ln in enumerate(lines) if "pam_pwquality" in ln)
    return "\n".join([*lines[:q], lines[q + 1], lines[q], *lines[q + 2:]])


def test_pam_control_and_order() -> None:
    seen = observed("applied_srv3.out")
    assert seen.pam is not None
    optional = seen.pam.replace("password\trequisite\t\t\tpam_pwquality.so",
                                "password\toptional\tpam_pwquality.so")
    swapped = after_unix(seen.pam)
    for pam, found in ((optional, "'optional' at line 25: a weak password is not refused"),
                       (swapped, "pam_pwquality.so at line 26 after pam_unix.so at line 25")):
        broken = core.Observed(**{**seen.__dict__, "pam": pam})
        findings = core.pam_findings(broken)
        assert [(f.found, f.severity) for f in findings] == [(found, "critical")]
        assert fix.pam_needs_change(WANT, broken)


def _run_on_copy(script: str, path: str, content: str, tmp_path: Path) -> tuple[int, str]:
    copy = tmp_path / Path(path).name
    copy.write_text(content, encoding="utf-8")
    proc = subprocess.run(["sh", "-c", script.replace(path, str(copy))],
                          capture_output=True, text=True)
    return proc.returncode, copy.read_text(encoding="utf-8")


def test_pam_script_repairs_a_copy(tmp_path: Path) -> None:
    seen = observed("applied_srv3.out")
    assert seen.pam is not None
    weak = seen.pam.replace("pam_pwquality.so retry=3",
                            "pam_pwquality.so minlen=6 retry=3 enforcing=0 conf=/tmp/x")
    weak = weak.replace("password\trequisite\t\t\tpam_pwquality.so",
                        "password\t[default=ignore]\tpam_pwquality.so")
    broken = core.Observed(**{**seen.__dict__, "pam": weak})
    assert "conf=/tmp/x: /etc/security/pwquality.conf.d/50-baomi.conf is not read" in \
        report(broken)
    rc, fixed = _run_on_copy(fix.pam_script(WANT, broken), pwq.COMMON_PASSWORD, weak,
                             tmp_path)
    assert rc == 0
    assert "password\trequisite\tpam_pwquality.so retry=3\n" in fixed
    repaired = core.Observed(**{**seen.__dict__, "pam": fixed})
    assert not fix.pam_needs_change(WANT, repaired)
    # After pam_unix: the script cannot fix the order and says so.
    swapped = after_unix(seen.pam)
    rc, _ = _run_on_copy(fix.pam_script(WANT, core.Observed(**{**seen.__dict__,
                                                                "pam": swapped})),
                         pwq.COMMON_PASSWORD, swapped, tmp_path)
    assert rc == 1


def test_login_defs_script_repairs_a_copy(tmp_path: Path) -> None:
    lines = ["# comment PASS_MAX_DAYS 5", "PASS_MAX_DAYS\t99999", "PASS_MIN_DAYS 0",
             "  PASS_MAX_DAYS   30", "UMASK 022"]
    content = "\n".join(lines) + "\n"
    grep = [pwq.Line(core.LOGIN_DEFS, n, ln) for n, ln in enumerate(lines, 1)
            if re.match(r"^\s*PASS_", ln)]
    seen = core.Observed(**{**observed("applied_srv3.out").__dict__, "login_defs": tuple(grep)})
    assert [f.subject for f in core.login_defs_findings(WANT, seen)] == [
        "/etc/login.defs PASS_MAX_DAYS", "/etc/login.defs PASS_MIN_DAYS",
        "/etc/login.defs PASS_WARN_AGE"]
    rc, fixed = _run_on_copy(fix.login_defs_script(WANT, seen), core.LOGIN_DEFS, content,
                             tmp_path)
    assert rc == 0
    assert fixed == ("# comment PASS_MAX_DAYS 5\nPASS_MAX_DAYS\t90\nPASS_MIN_DAYS\t1\n"
                     "PASS_MAX_DAYS\t90\nUMASK 022\nPASS_WARN_AGE\t7\n")


def test_policy_values_reach_dropin_defs_and_accounts() -> None:
    policy = load_text("passwords:\n  min_length: 16\n  min_classes: 4\n  max_days: 60\n"
                       "  min_days: 2\n  warn_days: 14\naccounts:\n  min_uid: 1001\n")
    want = core.desired(HostContext.of(policy, {"servers"}))
    assert "minlen = 16\nminclass = 4\n" in want.dropin
    assert want.login_defs == {"PASS_MAX_DAYS": "60", "PASS_MIN_DAYS": "2",
                               "PASS_WARN_AGE": "14"}
    seen = observed("applied_srv3.out")
    subjects = {f.subject for f in core.compare(want, seen)}
    assert {"pam_pwquality minlen", "pam_pwquality minclass", core.DROPIN,
            "/etc/login.defs PASS_MAX_DAYS", "/etc/login.defs PASS_WARN_AGE"} <= subjects
    # alice is uid 1000: below min_uid 1001 she is a system account, neither aged nor listed.
    assert "account alice (uid 1000)" not in subjects
    assert not any(r.startswith("alice") for r in core.out_of_scope(want, seen))


def test_stricter_ageing_is_still_reset_and_missing_last_change_is_found() -> None:
    seen = observed("applied_srv3.out")
    accounts = tuple(
        core.Account(**{**a.__dict__, "max_days": 30}) if a.name == "alice" else a
        for a in seen.accounts)
    stricter = core.Observed(**{**seen.__dict__, "accounts": accounts})
    assert fix.ageing_commands(WANT, stricter) == ["chage -m 1 -M 90 -W 7 alice"]
    accounts = tuple(
        core.Account(**{**a.__dict__, "last_change": None}) if a.name == "alice" else a
        for a in seen.accounts)
    off = core.Observed(**{**seen.__dict__, "accounts": accounts})
    assert [f.found for f in core.compare(WANT, off)] == [
        "min 1, max 90, warn 7 days, no last-change date: ageing is off"]
    assert fix.ageing_commands(WANT, off) == [
        'chage -m 1 -M 90 -W 7 -d "$(date +%F)" alice']


def test_unreadable_shadow_is_a_finding_not_a_pass() -> None:
    body = text("applied_srv3.out")
    start = body.index("==> shadow\n")
    end = body.index("<== shadow rc=0") + len("<== shadow rc=0")
    seen = core.parse(body[:start] + "==> shadow\ncannot read /etc/shadow\n<== shadow rc=77"
                      + body[end:], WANT)
    assert [str(f) for f in core.account_findings(WANT, seen)] == [
        "[R-PWD 密码策略] /etc/shadow: expected readable (the check runs as root), found "
        "cannot read /etc/shadow"]


def test_a_check_with_nothing_to_look_at_is_not_applicable_with_its_reason() -> None:
    """No human account in scope: the ageing checks are not applicable, naming who is out of
    scope; dictcheck = 0: the dictionary check is not applicable."""
    policy = load_text("accounts:\n  min_uid: 1001\n")
    want = core.desired(HostContext.of(policy, {"servers"}, "srv3"))
    seen = core.parse(text("applied_srv3.out"), want)
    result = evaluate(core.CONTROL, "srv3", want, seen)
    reason = result.not_applicable["passwords.account_ageing"]
    assert reason.startswith("no human account (uid ≥ 1001 with a login shell and a password)"
                             "; out of scope: ")
    assert "bob (uid 1001): no password (key-only or never set)" in reason
    assert result.status("passwords.empty_password") == "not applicable"
    assert result.status("passwords.min_length") == "pass"
    assert result.status("passwords.dictionary") == "pass"
    off = core.Observed(**{**seen.__dict__, "lib_values": None, "dict_present": False,
                           "pwq_files": {**seen.pwq_files, pwq.PWQ_CONF: "dictcheck = 0\n"}})
    assert core.skipped(WANT, off) == {
        "passwords.dictionary": "dictcheck = 0 (/etc/security/pwquality.conf:1): no "
                                "dictionary is loaded"}
    assert not core.dictionary_missing(off)
