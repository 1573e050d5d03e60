"""R-SEC virus protection: the pure parts, on output captured from lab hosts (avx lab)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from baomi.controls import antivirus as core
from baomi.controls.contract import HostContext, evaluate
from baomi.hostside.av_scan import nominated
from baomi.policy import PolicyError, load_text

DATA = Path(__file__).parent / "data" / "antivirus"
DEFAULT = (Path(__file__).parents[2] / "policy.yaml").read_text(encoding="utf-8")


def _want(policy: str = "", groups: tuple[str, ...] = ("servers",)) -> core.Desired:
    """The documented policy with ``policy`` (antivirus: {...}) in place of its section."""
    text = DEFAULT
    if policy:
        start = text.index("\nantivirus:")
        text = text[:start] + "\n" + policy + text[text.index("\n\n", start):]
    return core.desired(HostContext.of(load_text(text), groups, "srv1"))


def _seen(name: str, want: core.Desired) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"), want)


def test_detections_name_the_path_signature_and_what_was_done() -> None:
    want = _want()
    result = evaluate(core.CONTROL, "srv1", want, _seen("detections_srv1.out", want))
    found = {f.subject: f for f in result.findings_of(core.DETECTIONS.id)}
    # alice's EICAR file was moved; the path a crafted folder name nominated is a link to
    # /etc/shadow: recorded, never opened.
    assert found["/srv/customers/eicar.txt"].found.startswith(
        "baomi.EICAR-Test-File.UNOFFICIAL at 2026-12-02 ")
    assert "quarantined as " in found["/srv/customers/eicar.txt"].found
    assert "not moved (not opened: a link or gone" in found["/srv/customers/victim"].found
    assert all(f.clauses == ("R-SEC",) and f.severity == "critical" for f in found.values())


def test_detections_older_than_the_report_window_are_not_findings() -> None:
    want = _want("antivirus: {report_days: 1}\n")
    seen = _seen("detections_srv1.out", want)
    later = dataclasses.replace(seen, now=seen.now + 2 * 86_400)
    assert not evaluate(core.CONTROL, "srv1", want, later).findings_of(core.DETECTIONS.id)


def test_signatures_older_than_the_policy_allows_are_a_finding() -> None:
    want = _want("antivirus: {mirror: /srv/mirror, max_signature_age_days: 7}\n")
    seen = _seen("applied_srv2.out", want)
    fresh = {core.TEST_DB: seen.manifest[core.TEST_DB],  # type: ignore[index]
             "daily.cvd": {"sha256": "0" * 64, "built": seen.now - 6 * 86_400}}
    db = {**seen.db, "daily.cvd": "0" * 64}
    ok = dataclasses.replace(seen, manifest=fresh, db=db)
    assert not evaluate(core.CONTROL, "srv2", want, ok).findings_of(core.AGE.id)
    stale = dict(fresh, **{"daily.cvd": {"sha256": "0" * 64, "built": seen.now - 9 * 86_400}})
    result = evaluate(core.CONTROL, "srv2", want, dataclasses.replace(ok, manifest=stale))
    [finding] = result.findings_of(core.AGE.id)
    assert (finding.subject, finding.found) == ("/var/lib/clamav/daily.cvd", "built 9.0 days ago")
    # A file changed on the host after the copy is named with both digests.
    changed = dataclasses.replace(ok, db={**db, "daily.cvd": "1" * 64})
    [finding] = evaluate(core.CONTROL, "srv2", want, changed).findings_of(core.SIGNATURES.id)
    assert finding.found == "sha256 " + "1" * 64


def test_without_a_mirror_the_age_is_not_applicable_with_the_reason() -> None:
    want = _want()
    result = evaluate(core.CONTROL, "srv2", want, _seen("applied_srv2.out", want))
    assert "antivirus.mirror is not set" in result.not_applicable[core.AGE.id]
    assert "fanotify_init: Operation not permitted" in result.not_applicable[core.ON_ACCESS.id]


def test_on_access_paths_are_the_hosts_sensitive_paths() -> None:
    servers, workstations = _want(), _want(groups=("workstations",))
    assert "OnAccessIncludePath /srv/customers\n" in servers.clamd_conf
    assert "OnAccessIncludePath /home/shared/clients\n" in workstations.clamd_conf
    assert "/srv/customers" not in workstations.clamd_conf
    assert _want(groups=("backup",)).on_access is False
    assert "30 3 * * * root /usr/local/sbin/baomi-av-scan " in servers.cron


def test_a_name_with_a_newline_never_nominates_a_path_outside_its_line() -> None:
    report = ("/srv/customers/eicar.txt: baomi.EICAR-Test-File.UNOFFICIAL FOUND\n"
              "/srv/customers/x\n"
              "/srv/customers/victim: baomi.EICAR-Test-File.UNOFFICIAL FOUND\n"
              "/etc/shadow: Fake FOUND\n"
              "/srv/customers/clean.txt: OK\n")
    assert nominated(report, ["/srv/customers"]) == [
        ("/srv/customers/eicar.txt", "baomi.EICAR-Test-File.UNOFFICIAL"),
        ("/srv/customers/victim", "baomi.EICAR-Test-File.UNOFFICIAL"),  # confirmed by content
        ("", "Fake")]  # outside every scanned folder: recorded as unresolved, not acted on


@pytest.mark.parametrize(("text", "message"), [
    ("antivirus: {quarantine_dir: /tmp/q}\n", "antivirus.quarantine_dir: /tmp/q is shared"),
    ("antivirus: {mirror: mirror}\n", "'mirror' is a relative path"),
    ("antivirus: {scan_time: '25:00'}\n", "'25:00' is not a time HH:MM"),
    ("ssh_guard: {ignore: [10.0.0.300]}\n", "'10.0.0.300' is not an IP address"),
    ("log_forwarding: {host: 'a b'}\n", "'a b' is not an inventory host name"),
])
def test_bad_settings_are_named_with_their_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        load_text(text, "p.yaml")
    assert message in str(err.value) and "p.yaml:1:" in str(err.value)
