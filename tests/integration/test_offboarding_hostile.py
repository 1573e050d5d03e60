"""Issue 11 items 1-4: offboarding against a hostile departing user and a bad day, on a real
lab host over real ssh.

The departing user plants links and odd names in their home before leaving; an account is
rehired under the same name or unfrozen by hand before its purge; an operator types a wrong
date. Each test is the scenario itself; what must not happen is checked on the host.

A user is made due by the host's own record (``due`` set to today, as if the month had
passed), so the purge runs with the real date and no ``--now``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from baomi import offboarding as core
from baomi.fixes import offboarding as fix
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from baomi.policy import load
from tests.integration.controls import ROOT
from tests.integration.test_offboarding import baomi

HOST = "srv1"


@pytest.fixture(scope="module")
def hlab() -> Iterator[LabHandle]:
    with running_lab(f"oh{os.getpid() % 10_000_000}", Request(servers=1)) as handle:
        yield handle


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """BAOMI_STATE_DIR of one test: its own ledger."""
    return tmp_path


def sh(lab: LabHandle, command: str) -> str:
    result = lab.ssh(HOST, command)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def make_user(lab: LabHandle, user: str, setup: str = "true") -> int:
    """An ordinary account with a file in its home; SETUP runs as the user (their own doing)."""
    sh(lab, f"useradd -m -s /bin/bash {user} && echo notes > /home/{user}/notes.txt && "
            f"chown {user}: /home/{user}/notes.txt")
    sh(lab, f"su -s /bin/sh {user} -c {_q(setup)}")
    return int(sh(lab, f"id -u {user}").strip())


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def freeze(lab: LabHandle, state: Path, user: str, *extra: str) -> dict:
    result = baomi(state, "offboard", user, "--ticket", f"HR-{user}", "-i", str(lab.inventory),
                   "--json", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    row = json.loads(result.stdout)["hosts"][HOST]
    assert row["state"] == "frozen", row
    return row


def make_due(lab: LabHandle, user: str) -> None:
    """The month has passed: the host's record says the deletion is due today."""
    today = datetime.now(UTC).date().isoformat()
    path = core.record_path(user)
    sh(lab, f"python3 -c 'import json,sys; p=sys.argv[1]; r=json.load(open(p)); "
            f"r[\"due\"]=sys.argv[2]; open(p,\"w\").write(json.dumps(r)+\"\\n\")' {path} {today}")


def purge(lab: LabHandle, state: Path, *extra: str, timeout: int = 300,
          ) -> tuple[subprocess.CompletedProcess[str], dict[str, dict]]:
    result = baomi(state, "offboard", "--purge-due", "-i", str(lab.inventory), "--json",
                   *extra, timeout=timeout)
    try:
        events = {e["user"]: e for e in json.loads(result.stdout)["events"] if e["user"]}
    except json.JSONDecodeError:
        events = {}
    return result, events


def archive_members(lab: LabHandle, archive: str) -> list[str]:
    """Member names of an archive, NUL-separated by python's tarfile (names may hold '\\n')."""
    out = sh(lab, "python3 -c 'import tarfile,sys; sys.stdout.write(\"\\0\".join("
                  f"tarfile.open(sys.argv[1]).getnames()))' {archive}")
    return out.split("\0")


def ledger(state: Path) -> list[dict]:
    path = state / "offboarding" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- item 1: the freeze never acts through the user's links ----------------------------------

def test_freeze_does_not_follow_a_planted_ssh_link(hlab: LabHandle, state: Path) -> None:
    """~/.ssh -> /root/.ssh: root's keys stay, the deploy still connects, the link goes."""
    before = sh(hlab, "sha256sum /root/.ssh/authorized_keys")
    make_user(hlab, "linker", "ln -s /root/.ssh /home/linker/.ssh")
    row = freeze(hlab, state, "linker")
    assert sh(hlab, "sha256sum /root/.ssh/authorized_keys") == before
    assert sh(hlab, "echo still in").strip() == "still in"  # the deploy's own key works
    assert hlab.ssh(HOST, "test -e /home/linker/.ssh || test -L /home/linker/.ssh") \
        .returncode == 1, "the planted link is still in the home"
    assert any("/home/linker/.ssh/authorized_keys" in d for d in row["done"]), row
    quarantined = sh(hlab, "ls -A /var/lib/baomi/offboarding/quarantine/linker")
    assert "ssh-0-authorized_keys" in quarantined, quarantined
    # The quarantine holds the link's note, never root's keys.
    assert "/root/.ssh" in sh(hlab, "cat /var/lib/baomi/offboarding/quarantine/linker/"
                                    "ssh-0-authorized_keys*")
    again = freeze(hlab, state, "linker")
    assert again["done"] == [], again


def test_freeze_does_not_chmod_through_a_keys_link(hlab: LabHandle, state: Path) -> None:
    """~/.ssh/authorized_keys -> /bin/dash: /bin/dash keeps root:root 0755."""
    before = sh(hlab, "stat -c '%a %U:%G' /bin/dash /usr/bin/dash")
    make_user(hlab, "dasher", "mkdir -m 700 /home/dasher/.ssh && "
                              "ln -s /bin/dash /home/dasher/.ssh/authorized_keys")
    freeze(hlab, state, "dasher")
    assert sh(hlab, "stat -c '%a %U:%G' /bin/dash /usr/bin/dash") == before
    assert hlab.ssh(HOST, "test -L /home/dasher/.ssh/authorized_keys").returncode == 1
    assert hlab.ssh(HOST, "sh -c 'echo sh works'").stdout.strip() == "sh works"


# --- item 2: the purge's file list --------------------------------------------------------------

def test_purge_does_not_archive_etc_shadow_through_a_newline_name(
        hlab: LabHandle, state: Path) -> None:
    """A file ~/x and a folder 'x<newline>etc' holding 'shadow': the custodian's archive holds
    the user's own file under its real name, never the host's /etc/shadow."""
    make_user(hlab, "newline", "cd /home/newline && echo mine > x && mkdir \"$(printf 'x\\netc')\""
                               " && echo not-the-shadow > \"$(printf 'x\\netc')/shadow\"")
    freeze(hlab, state, "newline")
    make_due(hlab, "newline")
    result, events = purge(hlab, state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events["newline"]["state"] == "deleted", events
    members = archive_members(hlab, events["newline"]["archive"])
    assert "etc/shadow" not in members, members
    assert "home/newline/x\netc/shadow" in members and "home/newline/x" in members, members
    verify = sh(hlab, f"d=$(mktemp -d) && tar -xzf {events['newline']['archive']} -C $d && "
                      f"cat \"$d/home/newline/x\n\"etc/shadow; cd $d && "
                      f"sha256sum -c {events['newline']['archive']}.manifest; rm -rf $d")
    assert verify.startswith("not-the-shadow\n"), verify
    assert "home/newline/notes.txt: OK" in verify, verify


def test_purge_is_not_blocked_by_a_name_that_splits_into_a_missing_file(
        hlab: LabHandle, state: Path) -> None:
    """'y<newline>nothing' alone: the old list named a missing 'home/USER/y' and every daily
    purge of that user failed."""
    make_user(hlab, "splitter", "cd /home/splitter && echo data > \"$(printf 'y\\nnothing')\"")
    freeze(hlab, state, "splitter")
    make_due(hlab, "splitter")
    result, events = purge(hlab, state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events["splitter"]["state"] == "deleted", events
    assert "home/splitter/y\nnothing" in archive_members(hlab, events["splitter"]["archive"])


def test_purge_is_not_hung_by_a_link_to_dev_zero(hlab: LabHandle, state: Path) -> None:
    """~/zero -> /dev/zero and a FIFO: hashing them never ends; the purge skips them (regular
    files only) and finishes."""
    make_user(hlab, "zeroer", "cd /home/zeroer && ln -s /dev/zero zero && mkfifo pipe")
    freeze(hlab, state, "zeroer")
    make_due(hlab, "zeroer")
    result, events = purge(hlab, state, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events["zeroer"]["state"] == "deleted", events
    members = archive_members(hlab, events["zeroer"]["archive"])
    assert "home/zeroer/notes.txt" in members
    assert "home/zeroer/zero" not in members and "home/zeroer/pipe" not in members, members


# --- item 3: the purge deletes only the account that was frozen --------------------------------

def test_purge_refuses_a_rehired_account_with_a_new_uid(hlab: LabHandle, state: Path) -> None:
    """Same name, new UID (a rehire): the purge refuses it, the account and its home stay;
    --cancel records that it is not to be purged, and the next purge says nothing of it."""
    old = make_user(hlab, "rehire")
    freeze(hlab, state, "rehire")
    make_due(hlab, "rehire")
    policy = load(ROOT / "policy.yaml")
    # The steps as they were prepared from the frozen account (the race: rehired since).
    facts = core.parse("rehire", sh(hlab, core.observe_script("rehire")))
    assert facts.record is not None
    steps = fix.purge_steps(policy, facts.record, facts, "2026-12-31T00:00:00Z")
    sh(hlab, f"userdel -r rehire && useradd -m -u {old + 50} -s /bin/bash rehire && "
             "echo new-job > /home/rehire/contract.txt")
    ran = {s.what: hlab.ssh(HOST, s.script()) for s in steps}  # as any runner would
    deleting = ran["delete the account and its home /home/rehire"]
    assert deleting.returncode == 1, deleting
    assert f"rehire: UID {old + 50}, the frozen account's was {old} (rehired?): not purged" \
        in deleting.stderr, deleting.stderr
    assert all(r.returncode == 1 for w, r in ran.items() if not w.startswith("hand ")), ran
    assert sh(hlab, "id -u rehire; cat /home/rehire/contract.txt") == f"{old + 50}\nnew-job\n"
    assert hlab.ssh(HOST, "ls /var/lib/baomi/custody/rehire-*").returncode != 0

    result, events = purge(hlab, state)
    assert result.returncode != 0, result.stdout
    assert events["rehire"]["state"] == "refused", events
    assert f"UID {old + 50}" in events["rehire"]["error"] and str(old) in \
        events["rehire"]["error"], events["rehire"]
    assert sh(hlab, "id -u rehire; cat /home/rehire/contract.txt") == f"{old + 50}\nnew-job\n"

    cancel = baomi(state, "offboard", "rehire", "--cancel", "--ticket", "HR-BACK", "--reason",
                   "rehired", "-i", str(hlab.inventory), "--json")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    record = json.loads(sh(hlab, f"cat {core.record_path('rehire')}"))
    assert (record["state"], record["cancel_ticket"]) == ("cancelled", "HR-BACK"), record
    assert any(e["action"] == "cancel" and e["user"] == "rehire" and e["ticket"] == "HR-BACK"
               for e in ledger(state))
    status = json.loads(baomi(state, "offboard", "--status", "rehire", "--json").stdout)
    assert status["rehire"][HOST]["state"] == "cancelled", status
    result, events = purge(hlab, state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rehire" not in events
    assert sh(hlab, "id -u rehire").strip() == str(old + 50)


def test_purge_refuses_a_freeze_undone_by_hand(hlab: LabHandle, state: Path) -> None:
    make_user(hlab, "undone")
    freeze(hlab, state, "undone")
    make_due(hlab, "undone")
    # An administrator undoes the freeze by hand: a new password, a shell, no expiry.
    sh(hlab, "echo 'undone:Back-2-work-now' | chpasswd && usermod -s /bin/bash undone && "
             "chage -E -1 undone && passwd -S undone | grep -q ' P '")
    result, events = purge(hlab, state)
    assert result.returncode != 0, result.stdout
    assert events["undone"]["state"] == "refused", events
    assert "not locked" in events["undone"]["error"], events["undone"]
    assert hlab.ssh(HOST, "getent passwd undone && test -f /home/undone/notes.txt") \
        .returncode == 0
    cancel = baomi(state, "offboard", "undone", "--cancel", "--ticket", "HR-OOPS",
                   "-i", str(hlab.inventory))
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    result, events = purge(hlab, state)
    assert result.returncode == 0 and "undone" not in events, result.stdout + result.stderr


# --- item 4: dates with bounds ------------------------------------------------------------------

def test_a_future_now_is_refused_unless_forced(hlab: LabHandle, state: Path) -> None:
    make_user(hlab, "early")
    freeze(hlab, state, "early")
    result, _ = purge(hlab, state, "--now", "2099-01-01")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--now 2099-01-01 is in the future" in result.stderr, result.stderr
    assert hlab.ssh(HOST, "getent passwd early").returncode == 0
    assert not any(e.get("state") == "deleted" for e in ledger(state))
    forced, events = purge(hlab, state, "--now", "2099-01-01", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert events["early"]["state"] == "deleted"
    assert "--now 2099-01-01 is in the future" in events["early"]["forced"]
    assert hlab.ssh(HOST, "getent passwd early").returncode == 2


def test_an_old_effective_date_is_refused_unless_forced(hlab: LabHandle, state: Path) -> None:
    make_user(hlab, "oldhand")
    old = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    refused = baomi(state, "offboard", "oldhand", "--ticket", "HR-OLD", "--effective", old,
                    "-i", str(hlab.inventory))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"--effective {old} is 40 days ago" in refused.stderr, refused.stderr
    assert hlab.ssh(HOST, f"test -e {core.record_path('oldhand')}").returncode == 1
    assert sh(hlab, "getent passwd oldhand | cut -d: -f7").strip() == "/bin/bash"
    row = freeze(hlab, state, "oldhand", "--effective", old, "--force")
    assert f"--effective {old} is 40 days ago" in row["forced"], row
    assert any(e.get("forced") for e in ledger(state))
