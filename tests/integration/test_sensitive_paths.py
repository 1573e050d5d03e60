"""R-ACL, R-CLS on real lab hosts: fresh fails, apply passes, idempotent, tamper fails naming
the entry, apply repairs by removing bits (stricter files stay stricter), policy changes apply.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from baomi.controls import sensitive_paths as core
from baomi.controls.contract import HostContext
from baomi.lab.testing import LabHandle
from baomi.policy import load
from tests.integration.controls import ROOT, apply, check, outcomes

C = "sensitive_paths"
CHECK = "test_sensitive_paths"
POLICY = load(str(ROOT / "policy.yaml"))
SERVER = core.desired(HostContext.of(POLICY, {"servers"}))
DESKTOP = core.desired(HostContext.of(POLICY, {"workstations"}))


def _path(want: core.Desired, rank: int) -> core.PathWant:
    """The server path of the given level rank (e.g. the 绝密 one), from the policy."""
    return next(p for p in want.paths if POLICY.level(p.level).rank == rank)


def _stat(lab: LabHandle, host: str, path: str) -> str:
    out = lab.ssh(host, f"stat -c '%a %U:%G' {shlex.quote(path)}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _mark(lab: LabHandle, host: str, path: str) -> str:
    return lab.ssh(host, core.read_xattr(path)).stdout


def test_sensitive_paths_cycle(lab: LabHandle, tmp_path: Path) -> None:
    server = lab.group("servers")[0]
    desktop = lab.group("workstations")[0]
    hosts = [server, desktop]
    conf = _path(SERVER, 2)      # 机密: /srv/customers in the default policy
    top = _path(SERVER, 3)       # 绝密: /srv/contracts
    shared = DESKTOP.paths[0]    # 秘密 on workstations

    fresh = check(lab, CHECK, hosts)
    assert fresh.returncode == 1, fresh.stdout
    assert f"{conf.path}: expected a directory ({conf.level}, {conf.owner}:{conf.group}), " \
           "found missing" in fresh.stdout
    assert f"{shared.path} xattr {core.MARK_ATTR}: expected {shared.mark!r}, found missing" \
        in fresh.stdout
    # Per host: no directory and no mark fail; owners and modes have nothing to look at yet.
    assert "4 failed, 4 skipped" in fresh.stdout, fresh.stdout[-3000:]
    for host in hosts:
        for check_id in ("directory", "mark"):
            assert f"FAILED checks/{CHECK}.py::test_check[ssh://{host}-{C}.{check_id}]" \
                in fresh.stdout

    # --dry reports what would change and changes nothing (no directory, no group).
    dry = apply(lab, C, limit=hosts, extra=("--dry",))
    assert set(outcomes(dry, C).values()) == {"would change"}
    assert lab.ssh(server, f"test -e {shlex.quote(conf.path)}").returncode == 1
    assert lab.ssh(server, f"getent group {conf.group}").returncode == 2

    first = apply(lab, C, limit=hosts)
    assert outcomes(first, C) == {server: "changed", desktop: "changed"}
    assert check(lab, CHECK, hosts).returncode == 0
    # Directories are setgid (2xxx): what is created later inherits the path's group.
    assert _stat(lab, server, conf.path) == \
        f"{0o2000 | conf.max_dir_mode:o} {conf.owner}:{conf.group}"
    assert _stat(lab, server, top.path) == f"{0o2000 | top.max_dir_mode:o} {top.owner}:{top.group}"
    assert _mark(lab, server, top.path) == top.mark
    assert _mark(lab, desktop, shared.path) == shared.mark

    second = apply(lab, C, limit=hosts)
    assert outcomes(second, C) == {server: "unchanged", desktop: "unchanged"}

    # Everyday work: root (or any member) files a record with a sane umask; the setgid
    # directory gives it the path's group, so the tree stays compliant without an apply.
    filed = f"{conf.path}/filed.txt"
    assert lab.ssh(server, f"umask 027 && echo record > {shlex.quote(filed)}").returncode == 0
    assert _stat(lab, server, filed) == f"640 {conf.owner}:{conf.group}"
    assert check(lab, CHECK, [server]).returncode == 0

    # Users drop data with their usual umask 022, one file kept stricter on purpose; then an
    # attacker opens things up: world-readable deep file, 0777 directory (chmod keeps its
    # setgid bit: 2777), foreign owner, no mark.
    deep = f"{conf.path}/2026/q3/acme/deep.txt"
    strict = f"{conf.path}/2026/strict.txt"
    other = f"{conf.path}/2026/q3/other.txt"
    q = shlex.quote
    setup = lab.ssh(server, f"umask 022 && mkdir -p {q(deep.rsplit('/', 1)[0])} && "
                            f"echo acme > {q(deep)} && echo x > {q(other)} && "
                            f"echo s > {q(strict)} && chmod 0600 {q(strict)}")
    assert setup.returncode == 0, setup.stderr
    users = check(lab, CHECK, [server])
    assert f"{deep}: expected file mode at most {conf.max_file_mode:04o} ({conf.level}), " \
           "found 0644 (too open by 0004, world access)" in users.stdout
    assert apply(lab, C, limit=[server])["hosts"][server]["controls"][C] == "changed"
    assert check(lab, CHECK, [server]).returncode == 0
    # Bits above the ceiling were removed; the stricter file kept its mode.
    assert _stat(lab, server, deep).split()[0] == f"{0o644 & conf.max_file_mode:o}"
    assert _stat(lab, server, strict).split()[0] == "600"

    tamper = lab.ssh(server, f"chmod o+r {q(deep)} && chmod 0777 {q(top.path)} && "
                             f"chown nobody {q(other)} && " + _remove_mark(conf.path))
    assert tamper.returncode == 0, tamper.stderr
    drifted = check(lab, CHECK, [server])
    assert drifted.returncode == 1
    # R-ACL's ownership and modes and R-CLS's mark fail; the directory is there.
    assert "3 failed, 1 passed" in drifted.stdout, drifted.stdout[-3000:]
    for check_id in ("ownership", "file_mode", "mark"):
        assert f"FAILED checks/{CHECK}.py::test_check[ssh://{server}-{C}.{check_id}]" \
            in drifted.stdout
    assert f"{deep}: expected file mode at most {conf.max_file_mode:04o} ({conf.level}), " \
           "found 0644 (too open by 0004, world access)" in drifted.stdout
    assert f"{top.path}: expected directory mode at most {top.max_dir_mode:04o} ({top.level}), " \
           f"found 2777 (too open by {0o777 & ~top.max_dir_mode:04o}, world access)" \
        in drifted.stdout
    assert f"{other}: expected owner {conf.owner}:{conf.group}, found nobody:{conf.group}" \
        in drifted.stdout
    assert f"{conf.path} xattr {core.MARK_ATTR}: expected {conf.mark!r}, found missing" \
        in drifted.stdout

    repaired = apply(lab, C, limit=[server])
    assert outcomes(repaired, C) == {server: "changed"}
    assert check(lab, CHECK, [server]).returncode == 0
    assert _stat(lab, server, top.path) == f"{0o2000 | top.max_dir_mode:o} {top.owner}:{top.group}"
    assert _stat(lab, server, other) == f"{conf.max_file_mode:o} {conf.owner}:{conf.group}"

    # A stricter policy (机密 files at most 0600) is a change; going back is not (a ceiling).
    stricter = tmp_path / "policy.yaml"
    stricter.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        'english: confidential\n    severity: high\n    max_file_mode: "0640"',
        'english: confidential\n    severity: high\n    max_file_mode: "0600"'),
        encoding="utf-8")
    tight = _path(core.desired(HostContext.of(load(str(stricter)), {"servers"})), 2)
    assert tight.max_file_mode == 0o600
    before = check(lab, CHECK, [server], policy=stricter)
    assert f"{other}: expected file mode at most 0600 ({conf.level}), found 0640" in before.stdout
    assert outcomes(apply(lab, C, limit=[server], policy=stricter), C) == {server: "changed"}
    assert check(lab, CHECK, [server], policy=stricter).returncode == 0
    assert _stat(lab, server, other).split()[0] == "600"
    assert outcomes(apply(lab, C, limit=[server]), C) == {server: "unchanged"}
    assert check(lab, CHECK, [server]).returncode == 0


def _remove_mark(path: str) -> str:
    return (f"python3 -c 'import os, sys; os.removexattr(sys.argv[1], sys.argv[2])' "
            f"{shlex.quote(path)} {core.MARK_ATTR}")


def test_sensitive_paths_scale_evidence_is_capped(lab: LabHandle) -> None:
    """5,000 world-readable files: every one counted, 20 shown, one apply fixes all."""
    server = lab.group("servers")[-1]
    conf = _path(SERVER, 2)
    assert outcomes(apply(lab, C, limit=[server]), C)[server] in ("changed", "unchanged")
    bulk = f"{conf.path}/bulk"
    made = lab.ssh(server, "python3 -c 'import os, sys\n"
                           "d = sys.argv[1]\n"
                           "for i in range(50):\n"
                           # chmod, not makedirs' mode: an earlier test's login_defaults
                           # leave the host's umask 027, and 0750 dirs would not be counted
                           # (CI: "found 4980 more" instead of 5031).
                           "    os.makedirs(f\"{d}/{i}\", exist_ok=True)\n"
                           "    os.chmod(f\"{d}/{i}\", 0o755)\n"
                           "    os.chmod(d, 0o755)\n"
                           "    for j in range(100):\n"
                           "        p = f\"{d}/{i}/{j}.txt\"\n"
                           "        open(p, \"w\").write(\"x\")\n"
                           "        os.chmod(p, 0o644)\n"
                           "        os.chown(p, 65534, 65534)\n"
                           "    os.chown(f\"{d}/{i}\", 65534, 65534)\n"
                           "os.chown(d, 65534, 65534)\n"
                           f"' {shlex.quote(bulk)}", timeout=120)
    assert made.returncode == 0, made.stderr
    started = time.monotonic()
    drifted = check(lab, CHECK, [server])
    seconds = time.monotonic() - started
    assert drifted.returncode == 1
    # 5,000 files + 50 directories + bulk itself exceed the ceilings; 20 are shown.
    assert f"{conf.path}: expected no entry looser than {conf.max_file_mode:04o}/" \
           f"{conf.max_dir_mode:04o}, found {5051 - core.EVIDENCE_CAP} more entries beyond " \
           f"the first {core.EVIDENCE_CAP} shown" in drifted.stdout
    # Handed to nobody (setgid directories would give root's files the right group): that
    # list is capped the same way.
    assert f"{conf.path}: expected no entry owned other than {conf.owner}:{conf.group}, found " \
           f"{5051 - core.EVIDENCE_CAP} more entries beyond the first {core.EVIDENCE_CAP} shown" \
        in drifted.stdout
    shown = set(re.findall(rf"\] ({re.escape(bulk)}(?:/\S+)?): expected (?:file|directory) mode",
                           drifted.stdout))
    assert len(shown) == core.EVIDENCE_CAP, drifted.stdout[-3000:]
    assert seconds < 30, f"check took {seconds:.1f}s"
    assert outcomes(apply(lab, C, limit=[server]), C) == {server: "changed"}
    assert check(lab, CHECK, [server]).returncode == 0
    lab.ssh(server, f"rm -rf {shlex.quote(bulk)}")
