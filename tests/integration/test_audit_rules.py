"""R-LOG: the rules file on real lab hosts, and the generated rules loaded into this machine's
kernel (the only place kernel audit works: the initial PID namespace).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.controls import audit_rules as core
from baomi.controls.contract import HostContext, evaluate
from baomi.lab.testing import LabHandle
from baomi.policy import Policy, load
from tests.integration.controls import ROOT, apply, apply_raw, check, outcomes

C = "audit_rules"
CHECK = "test_audit_rules"
POLICY = load(str(ROOT / "policy.yaml"))


def desired(policy: Policy, groups: set[str]) -> core.Desired:
    return core.desired(HostContext.of(policy, groups))


SERVER = desired(POLICY, {"servers"})
LOCK = Path("/run/lock/baomi-kernel-audit.lock")


def test_audit_rules_cycle(lab: LabHandle, tmp_path: Path) -> None:
    server = lab.group("servers")[0]
    desktop = lab.group("workstations")[0]
    hosts = [server, desktop]
    assert desired(POLICY, {"workstations"}).content is None  # 秘密 has audit: false
    top = next(w for w in SERVER.watches if w.key.endswith(POLICY.level("绝密").english))

    fresh = check(lab, CHECK, hosts)
    assert fresh.returncode == 1, fresh.stdout
    assert f"{core.RULES_FILE}: expected {len(SERVER.watches)} baomi watch rule(s), found " \
           "missing" in fresh.stdout

    dry = apply(lab, C, limit=hosts, extra=("--dry",))
    assert outcomes(dry, C) == {server: "would change", desktop: "unchanged"}
    assert lab.ssh(server, f"test -e {core.RULES_FILE}").returncode == 1

    # Inside a lab host (a PID namespace) the kernel refuses: the apply installs the file and
    # says, without failing, that it could not load it.
    kernel = lab.ssh(server, "auditctl -l")
    assert "Operation not permitted" in kernel.stderr + kernel.stdout
    raw = apply_raw(lab, C, limit=hosts)
    assert raw.returncode == 0, raw.stderr[-2000:]
    assert outcomes(json.loads(raw.stdout), C) == {server: "changed", desktop: "unchanged"}
    assert f"[{server}] [{C}] {core.RULES_FILE} installed; kernel load not possible here: " \
           "Error sending rule list data request (Operation not permitted)" in raw.stderr
    assert lab.ssh(server, f"cat {core.RULES_FILE}").stdout == SERVER.content
    passed = check(lab, CHECK, hosts)
    assert passed.returncode == 0, passed.stdout
    # audit_rules.loaded is not applicable on both hosts (containers), with its reason.
    assert "2 passed, 2 skipped" in passed.stdout, passed.stdout

    second = apply(lab, C, limit=hosts)
    assert outcomes(second, C) == {server: "unchanged", desktop: "unchanged"}

    # Someone hides access to 绝密 data by dropping its watch, and adds a rule of their own.
    lab.ssh(server, f"sed -i '\\#{top.path}#d' {core.RULES_FILE} && "
                    f"echo '-a never,exit -F dir={top.path}' >> {core.RULES_FILE}")
    drifted = check(lab, CHECK, [server])
    assert drifted.returncode == 1
    assert f"found missing {top.rule!r}; extra '-a never,exit -F dir={top.path}'" \
        in drifted.stdout
    assert outcomes(apply(lab, C, limit=[server]), C) == {server: "changed"}
    assert check(lab, CHECK, [server]).returncode == 0

    # A policy change (watch writes and attribute changes only) shows up and is applied.
    narrower = tmp_path / "policy.yaml"
    narrower.write_text((ROOT / "policy.yaml").read_text(encoding="utf-8").replace(
        "permissions: rwa", "permissions: wa"), encoding="utf-8")
    want = desired(load(str(narrower)), {"servers"})
    before = check(lab, CHECK, [server], policy=narrower)
    assert f"missing {want.watches[0].rule!r}" in before.stdout
    assert outcomes(apply(lab, C, limit=[server], policy=narrower), C) == {server: "changed"}
    assert lab.ssh(server, f"cat {core.RULES_FILE}").stdout == want.content
    assert check(lab, CHECK, [server], policy=narrower).returncode == 0
    assert outcomes(apply(lab, C, limit=[server]), C) == {server: "changed"}  # back to default


@pytest.fixture
def auditctl(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Debian's auditctl unpacked into a private folder (installing auditd would touch /etc),
    used under a machine-wide lock: audit state is kernel-global, one test at a time."""
    debs = tmp_path / "debs"
    root = tmp_path / "auditd"
    debs.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(debs, 0o777)  # apt-get download runs as _apt where it can
    got = subprocess.run(["apt-get", "download", "-q", "auditd", "libauparse0"], cwd=debs,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    env = dict(os.environ, PATH=f"{root}/sbin:{root}/usr/sbin:{os.environ['PATH']}",
               LD_LIBRARY_PATH=f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


def test_generated_rules_load_into_the_kernel(auditctl: dict[str, str], tmp_path: Path) -> None:
    env = auditctl
    status = _run(env, "auditctl", "-s")
    assert status.returncode == 0, f"not in the initial PID namespace? {status.stderr}"
    enabled = next(line.split()[1] for line in status.stdout.splitlines()
                   if line.startswith("enabled "))
    assert enabled != "2", "audit rules are locked (enabled 2) until reboot: cannot test"
    previous = _run(env, "auditctl", "-l")
    assert previous.returncode == 0, previous.stderr
    saved = [line for line in previous.stdout.splitlines() if line.strip() != "No rules"]

    data = tmp_path / "data"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("sensitive_paths:\n" + "".join(
        f"  - path: {data / name}\n    level: {level}\n    groups: [servers]\n"
        for name, level in (("customers", "机密"), ("contracts", "绝密"), ("notes", "秘密"))),
        encoding="utf-8")
    want = desired(load(str(policy_file)), {"servers"})
    assert [w.path for w in want.watches] == [str(data / "customers"), str(data / "contracts")]
    for w in want.watches:
        Path(w.path).mkdir(parents=True)
    rules = tmp_path / "50-baomi.rules"
    assert want.content is not None
    rules.write_text(want.content, encoding="utf-8")
    try:
        loaded = _run(env, "auditctl", "-R", str(rules))
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        listed = _run(env, "auditctl", "-l").stdout
        for w in want.watches:
            assert w.rule in listed.splitlines(), listed
        # The control's own observe script and compare read the kernel's state as loaded (the
        # rules file is read from the temporary folder: this machine's /etc is never changed).
        script = core.observe_script(want).replace(core.RULES_FILE, str(rules))
        result = evaluate(core.CONTROL, "machine", want,
                          core.parse(_run(env, "sh", "-c", script).stdout, want))
        assert result.not_applicable == {}
        assert result.status("audit_rules.file") == "pass"
        expected = [] if enabled == "1" else [("kernel audit", f"enabled {enabled}")]
        assert [(f.subject, f.found) for f in result.findings_of("audit_rules.loaded")] == \
            expected
        # Removing a watch from the kernel is seen.
        top = want.watches[1]
        assert _run(env, "auditctl", "-W", top.path, "-p", top.permissions,
                    "-k", top.key).returncode == 0
        gone = evaluate(core.CONTROL, "machine", want, core.parse(
            _run(env, "sh", "-c", script).stdout, want)).findings_of("audit_rules.loaded")
        assert f"kernel audit watch {top.path}" in {f.subject for f in gone}
    finally:
        _run(env, "auditctl", "-D")
        if saved:
            restore = tmp_path / "previous.rules"
            restore.write_text("\n".join(saved) + "\n", encoding="utf-8")
            _run(env, "auditctl", "-R", str(restore))
        _run(env, "auditctl", "-e", enabled)
    after = _run(env, "auditctl", "-l").stdout
    assert [line for line in after.splitlines() if line.strip() != "No rules"] == saved
    assert f"enabled {enabled}" in _run(env, "auditctl", "-s").stdout
    assert shlex.quote(str(data)) not in after
