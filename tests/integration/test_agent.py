"""The agent on this machine's real kernel (inotify), real files, with a real collector process
over TLS: every kind of change arrives as the right finding with the right clause; nothing is
lost while the collector is away, when the agent is killed, when inotify's queue overflows;
a full spool drops the lowest severities, counted, and keeps critical findings.

The agent and the collector run as child processes of the test (stopped by pid); the
sensitive paths are folders under tmp_path.  inotify limits are the machine's and are not
changed: the overflow is provoked by stopping the agent (SIGSTOP) while more changes happen
than the kernel's default queue (16384 events) holds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent_env import (
    Agent,
    Collector,
    settled,
    spool_depth,
    wait_for,
    write_policy,
)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = Collector(tmp_path_factory.mktemp("collector") / "c")
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Setup:
    def __init__(self, tmp: Path, host: str, **policy: int) -> None:
        self.data = tmp / "data"
        self.spool = tmp / "spool"
        self.policy = write_policy(tmp / "policy.yaml", self.data, self.spool, **policy)
        self.agent = Agent(tmp, self.policy, host)


@pytest.fixture
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    s = Setup(tmp_path, request.node.name.replace("_", "-")[:60].strip("-"))
    try:
        yield s
    finally:
        s.agent.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(s.agent.log())


def by_check(findings: list[dict[str, object]]) -> dict[tuple[str, str], dict[str, object]]:
    return {(str(f["check"]), str(f["subject"])): f for f in findings}


def test_each_kind_of_change_is_the_right_finding_at_the_collector(
        collector: Collector, setup: Setup) -> None:
    agent, top = setup.agent, setup.data / "top"
    old = top / "old.txt"
    old.write_text("on file before the agent started")
    os.chmod(old, 0o600)
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline to reach the collector", settled(collector, agent, setup.spool), 30)
    first = collector.findings(agent.host)
    # A compliant baseline gives one summary event, no flood of "new file"; the only findings
    # are R-ENC: this machine has no dm-crypt, and the 机密/绝密 paths are not on LUKS (the
    # disk_encryption control's evidence chain, run locally by the agent).
    assert sorted((f["check"], f["subject"], f["severity"]) for f in first) == [
        ("disk_encryption.sensitive_paths", f"{setup.data}/conf (机密)", "high"),
        ("disk_encryption.sensitive_paths", f"{setup.data}/top (绝密)", "critical")]
    assert all("no crypt mapping" in str(f["found"]) for f in first)

    f = top / "record.txt"
    f.write_text("customer 1")
    os.chmod(f, 0o600)
    wait_for("created", lambda: ("agent.drift.created", str(f)) in by_check(
        collector.findings(agent.host)), 10)
    f.write_text("customer 1, changed")
    os.chmod(f, 0o644)
    os.chown(f, 65534, 0)
    moved = top / "renamed.txt"
    os.rename(old, moved)
    gone = top / "to-delete.txt"
    gone.write_text("x")
    time.sleep(0.3)
    gone.unlink()

    want = {
        ("agent.drift.content", str(f)): ("R-FIM", "critical"),
        ("agent.drift.mode", str(f)): ("R-FIM", "critical"),
        ("agent.drift.owner", str(f)): ("R-FIM", "critical"),
        ("sensitive_paths.file_mode", str(f)): ("R-ACL", "critical"),
        ("sensitive_paths.ownership", str(f)): ("R-ACL", "critical"),
        ("agent.drift.moved", str(moved)): ("R-FIM", "critical"),
        ("agent.drift.deleted", str(gone)): ("R-FIM", "critical"),
    }
    found = wait_for("every change's finding", lambda: (
        lambda got: got if set(want) <= set(got) else None)(
            by_check(collector.findings(agent.host))), 15)
    for key, (clause, severity) in want.items():
        assert found[key]["clauses"] == [clause], key
        assert found[key]["severity"] == severity, key
        assert found[key]["state"] == "open"
    assert "65534" in str(found[("sensitive_paths.ownership", str(f))]["found"]) or \
        "nobody" in str(found[("sensitive_paths.ownership", str(f))]["found"])
    assert found[("agent.drift.moved", str(moved))]["found"] == f"moved from {old}"
    assert ("agent.drift.deleted", str(old)) not in found  # a move is one finding, not two
    for record in found.values():  # metadata and hashes only, never the content
        assert "customer 1" not in str(record)

    os.chmod(f, 0o600)  # fixed: the R-ACL finding is resolved
    wait_for("the mode finding resolved", lambda: by_check(collector.findings(agent.host))[
        ("sensitive_paths.file_mode", str(f))]["state"] == "resolved", 10)
    status = agent.cli("status", "--json").stdout
    assert '"running": true' in status and '"acked_seq"' in status


def test_a_burst_of_writes_to_one_file_is_one_finding(collector: Collector,
                                                     setup: Setup) -> None:
    agent = setup.agent
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline", settled(collector, agent, setup.spool), 30)
    f = setup.data / "conf" / "ledger.csv"
    f.write_text("")
    os.chmod(f, 0o600)
    wait_for("created", settled(collector, agent, setup.spool), 10)
    before = collector.agent_row(agent.host)["max_seq"]
    with open(f, "a") as out:
        for i in range(2000):
            out.write(f"row {i}\n")
            out.flush()
    wait_for("the burst's finding", settled(collector, agent, setup.spool), 10)
    time.sleep(1)
    events = collector.agent_row(agent.host)["max_seq"] - before
    assert 1 <= events <= 3, f"{events} events for one burst of 2000 writes"


def test_collector_away_during_10000_changes_then_every_finding_arrives_once(
        collector: Collector, setup: Setup) -> None:
    agent = setup.agent
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline", settled(collector, agent, setup.spool), 30)
    collector.stop()
    try:
        base = setup.data / "secret"
        for d in range(10):
            (base / f"d{d}").mkdir(mode=0o750)
        for i in range(10_000):
            p = base / f"d{i % 10}" / f"f{i}"
            p.write_text(str(i))
            os.chmod(p, 0o640)
        wait_for("all 10,000 changes spooled",
                 lambda: spool_depth(setup.spool)[0] >= 10_010, 120)
        status = wait_for("the agent to notice the collector is away", lambda: (
            lambda s: s if s and s["collector"] and s["collector"]["reachable"] is False
            else None)(agent.status()), 30)
        assert status["collector"]["last_error"]
    finally:
        collector.start()
    wait_for("the spool to drain", settled(collector, agent, setup.spool), 120)
    row = collector.agent_row(agent.host)
    assert row["missing"] == 0 and row["events"] == row["max_seq"] == row["acked_seq"]
    created = collector.findings(agent.host, "agent.drift.created")
    files = {f["subject"] for f in created}
    assert len(created) == len(files) == 10_010  # 10 folders + 10,000 files, each once
    assert all(f["clauses"] == ["R-FIM"] and f["severity"] == "info" for f in created)


def test_agent_killed_mid_storm_misses_nothing(collector: Collector, setup: Setup) -> None:
    agent = setup.agent
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline", settled(collector, agent, setup.spool), 30)
    base = setup.data / "conf"
    done = threading.Event()

    def storm() -> None:
        for i in range(6000):
            p = base / f"s{i}"
            p.write_text(str(i))
            os.chmod(p, 0o600)
        done.set()

    writer = threading.Thread(target=storm)
    writer.start()
    time.sleep(0.5)
    agent.kill9()  # mid-storm: some changes spooled, some in flight, some not yet seen
    writer.join()
    assert done.is_set()
    (base / "s1").write_text("changed while the agent was down")
    agent.start()
    wait_for("everything at the collector", settled(collector, agent, setup.spool), 120)
    created = {f["subject"] for f in collector.findings(agent.host, "agent.drift.created")}
    assert created == {str(base / f"s{i}") for i in range(6000)}
    assert str(base / "s1") in {f["subject"] for f in collector.findings(
        agent.host, "agent.drift.content")} or str(base / "s1") in created


def test_inotify_overflow_is_followed_by_a_rescan_that_finds_every_change(
        collector: Collector, setup: Setup) -> None:
    agent = setup.agent
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline", settled(collector, agent, setup.spool), 30)
    base = setup.data / "top"
    agent.signal(signal.SIGSTOP)  # the consumer stalls: the kernel's queue fills
    try:
        for i in range(8000):  # ~3 events each: well past the default 16384
            (base / f"o{i}").write_text(str(i))
            os.chmod(base / f"o{i}", 0o600)
    finally:
        agent.signal(signal.SIGCONT)
    wait_for("the overflow's rescan", lambda: (agent.status() or {}).get("overflows"), 60)
    wait_for("every file's finding", lambda: len(collector.findings(
        agent.host, "agent.drift.created")) >= 8000, 120, every=1)
    wait_for("everything at the collector", settled(collector, agent, setup.spool), 60)
    created = {f["subject"] for f in collector.findings(agent.host, "agent.drift.created")}
    assert created == {str(base / f"o{i}") for i in range(8000)}
    status = wait_for("the status after the overflow",
                      lambda: (lambda s: s if s and s["overflows"] >= 1 else None)(
                          agent.status()), 20)
    assert status["last_scan"]["reason"] == "overflow"


def test_watch_limit_falls_back_to_polling_and_says_so(collector: Collector,
                                                      setup: Setup) -> None:
    """In a user namespace of its own the agent gets an inotify watch limit of 4 (the
    machine's limits are untouched): fewer watches than directories → polling rescans and
    an agent.watch_polling finding; a file created in an unwatched folder still arrives."""
    agent, base = setup.agent, setup.data / "conf"
    for d in range(10):
        (base / f"d{d}").mkdir(mode=0o750)
    agent.enroll(collector)
    limit = ("unshare", "--user", "--map-root-user", "sh", "-c",
             'echo 4 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh")
    agent.start(prefix=limit)
    status = wait_for("polling", lambda: (lambda st: st if st and st["polling"] else None)(
        agent.status()), 30)
    assert status["inotify_watches"] <= 4
    found = wait_for("the polling finding", lambda: collector.findings(
        agent.host, "agent.watch_polling"), 30)
    assert found[0]["clauses"] == ["R-FIM"] and "polled instead" in found[0]["found"]
    late = base / "d9" / "late.txt"
    late.write_text("made in a folder inotify does not watch")
    os.chmod(late, 0o600)
    wait_for("the polled change at the collector", lambda: [
        f for f in collector.findings(agent.host, "agent.drift.created")
        if f["subject"] == str(late)], 40, every=1)


def test_full_spool_drops_lowest_severities_counts_them_and_keeps_critical(
        collector: Collector, tmp_path: Path) -> None:
    s = Setup(tmp_path, "full-spool", spool_max_mb=1)
    agent = s.agent
    try:
        agent.enroll(collector)
        agent.start()
        wait_for("the baseline", settled(collector, agent, s.spool), 30)
        collector.stop()
        try:
            for i in range(3000):  # info: drift under 秘密 (no integrity level)
                (s.data / "secret" / f"i{i}").write_text(str(i))
                os.chmod(s.data / "secret" / f"i{i}", 0o640)
            critical = []
            for i in range(30):  # critical: 绝密 files readable by the group and others (R-ACL)
                p = s.data / "top" / f"c{i}"
                p.write_text(str(i))
                os.chmod(p, 0o644)
                critical.append(str(p))
            wait_for("the spool to fill and drop", lambda: (
                lambda st: st if st and st["spool"]["dropped"] > 0 and st["spool"]["events"]
                >= 3030 else None)(agent.status()), 60)
        finally:
            collector.start()
        wait_for("the spool to drain", settled(collector, agent, s.spool), 120)
        got = collector.findings(agent.host)
        modes = {f["subject"] for f in got if f["check"] == "sensitive_paths.file_mode"}
        assert set(critical) <= modes
        dropped = [f for f in got if f["check"] == "agent.spool_dropped"]
        assert len(dropped) == 1 and "findings dropped" in str(dropped[0]["found"])
        total = int(str(dropped[0]["found"]).split()[0])
        infos = [f for f in got if f["check"] == "agent.drift.created"
                 and f["severity"] == "info"]
        assert total > 0 and len(infos) + total >= 3000  # each one arrived or was counted
        assert all(f["severity"] == "critical" for f in got
                   if f["check"] == "agent.drift.created" and f["subject"] in critical)
    finally:
        agent.stop()


def test_scan_once_and_status_with_and_without_the_running_agent(collector: Collector,
                                                                 setup: Setup) -> None:
    agent = setup.agent
    for i in range(50):
        (setup.data / "conf" / f"r{i}").write_text(str(i))
        os.chmod(setup.data / "conf" / f"r{i}", 0o600)
    agent.enroll(collector)
    once = agent.cli("scan", "--once", "--json")
    result = json.loads(once.stdout)
    assert result["files"] == 50 and result["reason"] == "once" and result["shipped"] == "ok"
    assert spool_depth(setup.spool)[0] == 0
    text = agent.cli("status").stdout
    assert "agent: not running" in text and "collector reachable: True" in text
    assert "spool: 0 events" in text

    agent.start()
    (setup.data / "conf" / "r1").write_text("changed behind the watch's back")
    before = agent.status()["last_scan"]["at"]  # type: ignore[index]
    again = json.loads(agent.cli("scan", "--once", "--json").stdout)  # asks the running agent
    assert again["reason"] == "requested" and again["at"] > before
    text = agent.cli("status").stdout
    assert f"agent: running, pid {agent.proc.pid}" in text  # type: ignore[union-attr]
    assert "own: RSS" in text and "CPU" in text


def test_a_dead_observer_is_noticed_and_restarted(tmp_path: Path) -> None:
    """The supervisor's test and repair, on real inotify (in this process)."""
    from baomi.agent.watch import Pending, Watcher

    pending, errors = Pending(), []
    watcher = Watcher([str(tmp_path)], pending, errors.append)
    watcher.start()
    try:
        assert watcher.healthy()
        assert watcher.observer is not None
        watcher.observer.stop()  # as if its thread had died
        watcher.observer.join(10)
        assert not watcher.healthy()
        watcher.restart()
        assert watcher.healthy() and watcher.restarts == 1
        (tmp_path / "after-restart").write_text("x")
        items, overflow = pending.take(timeout=5)
        assert (str(tmp_path / "after-restart"), None) in items and not overflow
        assert errors == []
    finally:
        watcher.stop()


def test_odd_names_and_long_paths_never_block_shipping(collector: Collector,
                                                      setup: Setup) -> None:
    """A local user can make a name that is not UTF-8 and a path longer than the collector
    takes as a subject: both arrive (escaped, shortened with a digest) and so does what
    follows them."""
    agent, top = setup.agent, setup.data / "top"
    agent.enroll(collector)
    agent.start()
    wait_for("the baseline", settled(collector, agent, setup.spool), 30)
    odd = os.fsencode(top) + b"/\xff\xfe-client"
    fd = os.open(odd, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    deep = top
    for i in range(5):
        deep = deep / (f"{i}" * 250)
    deep.mkdir(parents=True, mode=0o700)
    (deep / "record").write_text("x")
    os.chmod(deep / "record", 0o600)
    after = top / "after.txt"
    after.write_text("y")
    os.chmod(after, 0o600)
    got = wait_for("all three at the collector", lambda: (
        lambda subjects: subjects if str(after) in subjects and len(subjects) >= 8 else None)(
            {f["subject"] for f in collector.findings(agent.host, "agent.drift.created")}), 30)
    assert f"{top}/\\xff\\xfe-client" in got
    long = [s for s in got if len(s) == 1024]
    assert len(long) >= 2 and all("…#" in s for s in long)  # the deepest folders and the file
    wait_for("nothing left behind", settled(collector, agent, setup.spool), 30)
