"""Issue 11 item 11: the sensitive-path fixes never act through a link the tree's owner planted.

srv1's /srv/customers is owned by a non-root user ``clerk`` with ``marking: file``. clerk
links ``.baomi-level`` to /etc/passwd, and keeps swapping 300 of their directories (each
holding a file ``f``) for links to a root program or to a root folder holding ``f`` while the
apply runs (the window between find's test and chmod/chown).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.controls import ROOT, apply, apply_raw, outcomes

TREE = "/srv/customers"
VICTIM = "/usr/local/bin/victim"
VICTIM_DIR = "/usr/local/victimdir"  # holds f, root:root 0644: what a swapped parent reaches
# clerk's swapper: renameat2(RENAME_EXCHANGE) swaps directory dN and link lN atomically, so
# both names always exist (find never meets a vanished entry) and dN is a link half the time.
SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
names = [(b"d%d" % i, b"l%d" % i) for i in range(1, 301)] + \
    [(b"p%d" % i, b"q%d" % i) for i in range(1, 301)]
while True:
    for d, l in names:
        libc.renameat2(-100, d, -100, l, 2)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHandle]:
    with running_lab(f"k{os.getpid() % 10_000_000}", Request(servers=1)) as handle:
        yield handle


def clerk_policy(directory: Path) -> Path:
    """policy.yaml with ``marking: file`` and clerk owning /srv/customers."""
    text = (ROOT / "policy.yaml").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^marking: xattr", "marking: file", text)
    assert n == 1
    text, n = re.subn(r"(- path: /srv/customers.*\n.*\n\s+owner:) root", r"\1 clerk", text)
    assert n == 1
    path = directory / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def facts(lab: LabHandle, path: str) -> str:
    out = lab.ssh("srv1", f"stat -c '%a %U:%G' {path} && sha256sum < {path}")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_marker_link_and_swapped_directories_leave_root_files_alone(
        lab: LabHandle, tmp_path: Path) -> None:
    setup = (
        f"set -e; useradd -m -s /bin/sh clerk; install -d -o clerk -g clerk -m 0755 {TREE}; "
        f"install -m 0755 /bin/true {VICTIM}; install -d {VICTIM_DIR}; "
        f"echo root-data > {VICTIM_DIR}/f; "
        f"runuser -u clerk -- ln -s /etc/passwd {TREE}/.baomi-level; "
        f"runuser -u clerk -- sh -c 'for i in $(seq 300); do mkdir -m 0777 {TREE}/d$i && "
        f"ln -s {VICTIM} {TREE}/l$i && mkdir {TREE}/p$i && echo x > {TREE}/p$i/f && "
        f"ln -s {VICTIM_DIR} {TREE}/q$i; done'")
    result = lab.ssh("srv1", setup)
    assert result.returncode == 0, result.stderr
    passwd, victim = facts(lab, "/etc/passwd"), facts(lab, VICTIM)
    held = facts(lab, f"{VICTIM_DIR}/f")
    policy = clerk_policy(tmp_path)

    start = lab.ssh("srv1", f"setsid runuser -u clerk -- python3 -c {shlex.quote(SWAPPER)} {TREE} "
                            "> /dev/null 2>&1 < /dev/null & echo $!")
    pid = start.stdout.strip()
    assert pid.isdigit(), start.stderr
    try:
        # Whether this run reports a failure does not matter here; what it touched does.
        apply_raw(lab, "sensitive_paths", limit=["srv1"], policy=policy)
    finally:
        stop = lab.ssh("srv1", f"kill -- -{pid}; sleep 0.2; cd {TREE} && for i in $(seq 300);"
                               " do for p in d:l p:q; do a=${p%:*}$i b=${p#*:}$i; [ -L $a ] && "
                               "mv -T $b x.tmp && mv -T $a $b && mv -T x.tmp $a; done; done; "
                               "ls -ld d* p* | grep -c ^d")
        assert stop.stdout.strip() == "600", stop.stdout + stop.stderr
    assert facts(lab, "/etc/passwd") == passwd, "/etc/passwd changed through the marker link"
    assert facts(lab, VICTIM) == victim, f"{VICTIM} changed through a swapped directory"
    assert facts(lab, f"{VICTIM_DIR}/f") == held, f"{VICTIM_DIR}/f changed through a swapped " \
        "parent directory"

    # Without the race the same apply converges: marker a file, directories setgid and 2750.
    report = apply(lab, "sensitive_paths", limit=["srv1"], policy=policy)
    assert outcomes(report, "sensitive_paths")["srv1"] in ("changed", "unchanged"), report
    marker = lab.ssh("srv1", f"stat -c '%F %U:%G' {TREE}/.baomi-level").stdout.strip()
    assert marker == "regular file clerk:customer-data", marker
    modes = lab.ssh("srv1", f"stat -c '%a' {TREE}/d*/ | sort | uniq -c").stdout.split()
    assert modes == ["300", "2750"], modes
    assert facts(lab, "/etc/passwd") == passwd and facts(lab, VICTIM) == victim
    assert facts(lab, f"{VICTIM_DIR}/f") == held
    owners = lab.ssh("srv1", f"stat -c '%U:%G' {TREE}/p*/f | sort | uniq -c").stdout.split()
    assert owners == ["300", "clerk:customer-data"], owners
