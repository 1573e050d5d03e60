"""sensitive_paths' parser and compare on output captured from real lab hosts.

fresh_srv1.out: the servers' script run on a host that never had the paths (bak1: no
customer-data/legal groups either); applied_srv1.out: after `baomi apply --only
sensitive_paths`; tampered_srv1.out: after chmod o+r deep inside, chmod 0666 on 30 files,
chmod 0777 on /srv/contracts, chown nobody on one file and the xattr removed;
applied_file_marking_srv2.out: applied with ``marking: file``.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from baomi.controls import sensitive_paths as core
from baomi.controls.contract import HostContext, evaluate
from baomi.fixes import sensitive_paths as fix
from baomi.policy import Policy, load_text

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "sensitive_paths"
POLICY = load_text((ROOT / "policy.yaml").read_text(encoding="utf-8"))
SERVERS = core.desired(HostContext.of(POLICY, {"servers"}, "srv1"))


def want_of(policy: Policy, *groups: str) -> core.Desired:
    return core.desired(HostContext.of(policy, groups))


def observed(name: str) -> core.Observed:
    return core.parse((DATA / name).read_text(encoding="utf-8"), SERVERS)


def text(findings: list) -> str:
    return "\n".join(str(f) for f in findings)


def test_desired_follows_policy_levels_and_groups() -> None:
    assert [(p.path, p.level, p.group, oct(p.max_file_mode), oct(p.max_dir_mode), p.mark)
            for p in SERVERS.paths] == [
        ("/srv/customers", "机密", "customer-data", "0o640", "0o750", "confidential 机密"),
        ("/srv/contracts", "绝密", "legal", "0o600", "0o700", "top-secret 绝密")]
    ws = want_of(POLICY, "workstations")
    assert [p.path for p in ws.paths] == ["/home/shared/clients"]
    assert want_of(POLICY, "backup").paths == ()
    assert core.CONTROL.not_applicable(want_of(POLICY, "backup")) == \
        "no sensitive path applies to this host's groups"
    assert core.CONTROL.not_applicable(SERVERS) is None


def test_modes_and_setgid_passes_remove_bits_and_never_follow_links(tmp_path: Path) -> None:
    """The host-side program run for real on a local tree: bits above the ceilings go, stricter
    entries stay stricter, a link's target and a hard-linked file keep their modes."""
    top, outside = tmp_path / "tree", tmp_path / "outside"
    (top / "sub").mkdir(parents=True)
    outside.write_text("x")
    outside.chmod(0o755)
    (top / "open").write_text("x")
    (top / "open").chmod(0o666)
    (top / "strict").write_text("x")
    (top / "strict").chmod(0o400)
    (top / "sub").chmod(0o777)
    (top / "link").symlink_to(outside)
    (top / "hard").hardlink_to(outside)
    want = replace(SERVERS.paths[0], path=str(top))  # 机密: files ≤ 0640, directories ≤ 0750
    modes = subprocess.run(["sh", "-c", fix.modes_script(want)], capture_output=True, text=True)
    assert modes.returncode == 1 and f"{top}/hard: 2 hard links" in modes.stderr, modes.stderr
    setgid = subprocess.run(["sh", "-c", fix.setgid_script(want)], capture_output=True, text=True)
    assert setgid.returncode == 0, setgid.stderr

    def mode(path: Path) -> int:
        return path.lstat().st_mode & 0o7777

    assert mode(top / "open") == 0o640 and mode(top / "strict") == 0o400
    assert mode(top / "sub") == 0o2750 and mode(top) & 0o2000
    assert mode(outside) == 0o755


def test_fresh_host_reports_missing_paths_groups_and_marks() -> None:
    seen = observed("fresh_srv1.out")
    assert [p.root for p in seen.paths] == [None, None]
    assert seen.paths[0].owner_exists and not seen.paths[0].group_exists
    found = text(core.compare(SERVERS, seen))
    assert "[R-ACL 最小权限] /srv/customers: expected a directory (机密, root:customer-data), " \
           "found missing" in found
    assert "[R-ACL 最小权限] /srv/contracts: expected a directory (绝密, root:legal)" in found
    assert "[R-CLS 密级分类] /srv/customers xattr user.baomi.level: expected " \
           "'confidential 机密', found missing" in found
    # Nothing exists to own or to be too open: those checks are not applicable, not passed.
    result = evaluate(core.CONTROL, "srv1", SERVERS, seen)
    assert result.statuses() == {"sensitive_paths.directory": "fail",
                                 "sensitive_paths.ownership": "not applicable",
                                 "sensitive_paths.file_mode": "not applicable",
                                 "sensitive_paths.mark": "fail"}
    assert result.not_applicable["sensitive_paths.file_mode"] == \
        "no sensitive path is a directory yet (see sensitive_paths.directory)"


def test_applied_host_is_compliant() -> None:
    seen = observed("applied_srv1.out")
    assert seen.paths[0].root == core.Entry("d", 0o750, "root", "customer-data",
                                            "/srv/customers")
    assert seen.paths[1].mark == "top-secret 绝密"
    assert seen.paths[0].modes == core.Offenders((), 0)
    assert core.compare(SERVERS, seen) == []


def test_tampered_tree_names_each_offender_and_caps_the_evidence() -> None:
    seen = observed("tampered_srv1.out")
    customers = seen.paths[0]
    assert customers.modes.total == 30
    assert len(customers.modes.entries) == core.EVIDENCE_CAP
    findings = core.compare(SERVERS, seen)
    found = text(findings)
    assert "/srv/customers/a/f3.txt: expected owner root:customer-data, found " \
           "nobody:customer-data" in found
    assert "/srv/customers: expected no entry looser than 0640/0750, found 10 more entries " \
           "beyond the first 20 shown" in found
    assert "/srv/contracts: expected directory mode at most 0700 (绝密), found 0777 " \
           "(too open by 0077, world access)" in found
    assert "/srv/customers xattr user.baomi.level: expected 'confidential 机密', " \
           "found missing" in found
    # The stricter file (0600) is not an offender; the tampered ones are, with their bits.
    assert "/srv/customers/a/f30.txt" not in found
    # Each finding carries the stable ID of its kind of check, and only that check's clause.
    checks = {(f.subject, f.check, f.clauses) for f in findings}
    assert ("/srv/customers/a/f3.txt", "sensitive_paths.ownership", ("R-ACL",)) in checks
    assert ("/srv/contracts", "sensitive_paths.file_mode", ("R-ACL",)) in checks
    assert ("/srv/customers", "sensitive_paths.file_mode", ("R-ACL",)) in checks  # the cap
    assert ("/srv/customers xattr user.baomi.level", "sensitive_paths.mark", ("R-CLS",)) \
        in checks
    result = evaluate(core.CONTROL, "srv1", SERVERS, seen)
    assert result.statuses() == {"sensitive_paths.directory": "pass",
                                 "sensitive_paths.ownership": "fail",
                                 "sensitive_paths.file_mode": "fail",
                                 "sensitive_paths.mark": "fail"}
    severities = {f.subject: f.severity for f in findings}
    assert severities["/srv/contracts"] == "critical"
    assert severities["/srv/customers/a/f3.txt"] == "high"


def test_deep_world_readable_file_is_reported_as_world_access() -> None:
    seen = observed("tampered_srv1.out")
    deep = [e for e in seen.paths[0].modes.entries if e.path.endswith("/a/b/c/deep.txt")]
    assert deep == [core.Entry("f", 0o644, "root", "customer-data",
                               "/srv/customers/a/b/c/deep.txt")]
    assert core.excess(SERVERS.paths[0], deep[0]) == 0o004
    # The same judgement on one entry alone (the agent's watch): mode only, owner is right.
    assert [(f.check, f.found) for f in core.entry_findings(SERVERS.paths[0], deep[0])] == [
        ("sensitive_paths.file_mode", "0644 (too open by 0004, world access)")]
    link = core.Entry("l", 0o777, "nobody", "nogroup", "/srv/customers/link")
    assert core.entry_findings(SERVERS.paths[0], link) == []
    assert "/srv/customers/a/b/c/deep.txt: expected file mode at most 0640 (机密), found 0644 " \
           "(too open by 0004, world access)" in text(core.compare(SERVERS, seen))


def test_file_marking_reads_the_marker_file() -> None:
    policy = load_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "marking: xattr", "marking: file"))
    want = want_of(policy, "servers")
    seen = observed("applied_file_marking_srv2.out")
    assert [p.mark for p in seen.paths] == ["confidential 机密", "top-secret 绝密"]
    assert core.compare(want, seen) == []
    # The same host judged against a level renamed in the policy: the mark is stale.
    renamed = load_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "marking: xattr", "marking: file").replace("english: confidential",
                                                   "english: restricted"))
    found = text(core.compare(want_of(renamed, "servers"), seen))
    assert "/srv/customers/.baomi-level: expected 'restricted 机密', found " \
           "'confidential 机密'" in found


def test_stricter_policy_turns_compliant_entries_into_findings() -> None:
    stricter = load_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        'max_dir_mode: "0750"\n    encryption: true', 'max_dir_mode: "0700"\n    encryption: true'))
    want = want_of(stricter, "servers")
    assert want.paths[0].max_dir_mode == 0o700
    # compare judges what find selected; the applied capture selected nothing under the old
    # ceiling, but the root directory itself is re-judged by its recorded mode.
    assert core.excess(want.paths[0], observed("applied_srv1.out").paths[0].root) == 0o050


def test_parser_ignores_noise_lines() -> None:
    offenders = core.parse_offenders("find: '/x': Permission denied\nf 644 a b /p q\ntotal 3\n")
    assert offenders.entries == (core.Entry("f", 0o644, "a", "b", "/p q"),)
    assert offenders.total == 3


def test_marker_file_is_installed_with_the_trees_owner_and_ceiling(tmp_path: Path) -> None:
    """The deploy's marker-file script, run for real on a scratch directory (as root: owner
    root:root here); a symlink planted at the marker's name is replaced, not followed."""
    victim = tmp_path / "victim"
    victim.write_text("keep\n", encoding="utf-8")
    (tmp_path / core.MARK_FILE).symlink_to(victim)
    want = replace(SERVERS.paths[0], path=str(tmp_path), owner="root", group="root")
    done = subprocess.run(["sh", "-c", fix.mark_script(want, "file")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    marker = tmp_path / core.MARK_FILE
    assert not marker.is_symlink() and marker.read_text(encoding="utf-8") == \
        "confidential 机密\n"
    assert oct(marker.stat().st_mode & 0o777) == oct(want.max_file_mode)
    assert victim.read_text(encoding="utf-8") == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [core.MARK_FILE, "victim"]
    seen = core.parse(subprocess.run(
        ["sh", "-c", core.observe_script(core.Desired("file", (want,)))],
        capture_output=True, text=True).stdout, core.Desired("file", (want,)))
    assert seen.paths[0].mark == want.mark


def test_owner_pass_changes_entries_and_links_themselves_never_targets(tmp_path: Path) -> None:
    """The host-side program run for real (as root, like the deploy) on a local tree."""
    top, outside = tmp_path / "tree", tmp_path / "outside"
    (top / "sub").mkdir(parents=True)
    outside.write_text("x")
    (top / "sub" / "f").write_text("x")
    (top / "link").symlink_to(outside)
    (top / "hard").hardlink_to(outside)
    want = replace(SERVERS.paths[0], path=str(top), owner="nobody", group="nogroup")
    done = subprocess.run(["sh", "-c", fix.ownership_script(want)], capture_output=True,
                          text=True)
    assert done.returncode == 1 and f"{top}/hard: 2 hard links" in done.stderr, done.stderr
    nobody = (65534, 65534)
    for entry in (top, top / "sub", top / "sub" / "f", top / "link"):
        st = entry.lstat()
        assert (st.st_uid, st.st_gid) == nobody, entry
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0)
    unknown = replace(want, owner="no-such-user-x")
    refused = subprocess.run(["sh", "-c", fix.ownership_script(unknown)], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "no such user or group" in refused.stderr
