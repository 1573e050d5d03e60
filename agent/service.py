"""The running agent: one processing thread owns the baseline; the watcher feeds it paths; the
shipper empties the spool.

Start: spool ``agent.started``, start the watcher (so nothing changed during the first scan
is missed), scan every sensitive path (the first time: the baseline, reported as one
``agent.baseline`` summary event plus any standing violation; after a restart: the drift
since the agent stopped), run the local self-check, then loop:

* paths from the watcher → re-stat, re-hash → rules → spool → baseline;
* an inotify queue overflow (or the coalescing queue's bound) → rescan everything at once;
* every ``rescan_minutes``: rescan and a retention sweep; every ``self_check_minutes``: the
  ``disk_encryption`` control run locally (R-ENC evidence chain); every :data:`SUPERVISE`
  seconds: restart a dead observer (then rescan), compare the inotify watches held with the
  directories known (fewer → watch limit reached → poll by rescanning every
  :data:`POLL_SECONDS`, reported as ``agent.watch_polling``), ship the antivirus scan's new
  detections (R-SEC, :mod:`baomi.agent.detections`), write ``status.json``.

The loop sleeps on the watcher's queue until the next of these is due: idle, the agent wakes
about once per :data:`SUPERVISE` seconds (plus the shipper's idle tick).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baomi import __version__
from baomi.agent import detections, rules
from baomi.agent import status as report
from baomi.agent.actors import Actors, group_name, user_name
from baomi.agent.config import Enrolment, write_private
from baomi.agent.files import FileState, Swapped, text
from baomi.agent.scan import Batch, Change, Scanner, ScanStats
from baomi.agent.ship import Client, Shipper
from baomi.agent.spool import Spool, event
from baomi.agent.state import State
from baomi.agent.watch import Pending, Watcher, inotify_watches
from baomi.controls.antivirus import DETECTIONS_LOG, detection_findings
from baomi.controls.contract import HostContext
from baomi.findings import Finding
from baomi.policy import Policy

MIB = 1 << 20
SUPERVISE = 10.0
POLL_SECONDS = 10.0
SELF_CHECKS = ("disk_encryption",)


def file_scope(check_id: str) -> bool:
    """The standing checks judged per file (their open findings are keyed by the file)."""
    return check_id.startswith("sensitive_paths.") or check_id == rules.RETENTION.id


def run_locally(script: str) -> str:
    """Run a control's read-only observe script on this host (as the checks do over SSH)."""
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=300,
                          check=False)
    return done.stdout


class Agent:
    def __init__(self, policy: Policy, directory: Path, enrolment: Enrolment | None,
                 groups: tuple[str, ...] = (), workers: int = 4,
                 detections_log: Path = Path(DETECTIONS_LOG)) -> None:
        self.policy = policy
        self.dir = directory
        self.enrolment = enrolment
        self.groups = set(enrolment.groups if enrolment else groups)
        self.watched = rules.watched(policy, self.groups)
        self.roots = [w.path.rstrip("/") or "/" for w in self.watched]
        a = policy.agent
        self.state = State(directory / "state.db")
        self.spool = Spool(Path(a.spool_dir) / "spool.db", a.spool_max_mb * MIB)
        self.scanner = Scanner(self.state, a.hash, a.max_hash_mb * MIB, workers, self.roots)
        self.names: rules.Names = lambda uid, gid: (user_name(uid), group_name(gid))
        self.pending = Pending()
        self.errors: list[str] = []
        self.watcher = Watcher(self.roots, self.pending, self._error)
        self.actors = Actors(self.roots, self._error)
        self.stopping = threading.Event()
        self.rescan_requested = threading.Event()
        self.shipper: Shipper | None = None
        if enrolment is not None:
            client = Client(enrolment.collector, enrolment.ca_file, enrolment.credential)
            self.shipper = Shipper(self.spool, client, a.batch_size,
                                   float(a.ship_interval_seconds),
                                   functools.partial(report.health, self))
        self.detections_log = detections_log
        self.last_scan: dict[str, Any] = {}
        self.polling: str | None = None
        self.started = time.time()

    # --- recording ----------------------------------------------------------------------

    def _error(self, message: str) -> None:
        self.errors = [*self.errors[-19:], f"{time.strftime('%H:%M:%S')} {message}"]

    def _reconcile(self, subject: str, findings: list[Finding],
                   open_now: dict[str, str]) -> tuple[list[dict[str, Any]],
                                                      list[tuple[str, str, str]],
                                                      list[tuple[str, str]]]:
        """Events for what is new or changed in a subject's standing findings, and what went."""
        events, opened, closed = [], [], []
        new = {f.check: f for f in findings}
        for check_id, f in new.items():
            if open_now.get(check_id) != text(f.found):
                events.append(event("finding", finding=f.as_dict()))
                opened.append((subject, check_id, f.found))
        for check_id in open_now:
            if check_id not in new:
                events.append(event("resolved", finding={"check": check_id, "subject": subject}))
                closed.append((subject, check_id))
        return events, opened, closed

    def _emit(self, changes: list[Change], *, baseline: bool) -> None:
        """Findings of changes → spool (durably, first) → open-findings table."""
        now_ns = time.time_ns()
        events: list[dict[str, Any]] = []
        opened: list[tuple[str, str, str]] = []
        closed: list[tuple[str, str]] = []
        for ch in changes:
            self._mark(ch)
            w = rules.owner_of(self.watched, ch.path)
            if w is None:
                continue
            if not baseline:
                events += [event("finding", finding=self._with_actor(f, ch.path))
                           for f in rules.drift(w, ch, self.names)]
            if ch.moved_from is not None and ch.moved_from != ch.path:
                e, o, c = self._reconcile(ch.moved_from, [], self._open(ch.moved_from))
                events, opened, closed = events + e, opened + o, closed + c
            e, o, c = self._reconcile(ch.path, rules.standing(w, ch.new, self.names, now_ns),
                                      self._open(ch.path))
            events, opened, closed = events + e, opened + o, closed + c
        self.spool.append(events)
        if opened or closed:
            self.state.update_open(opened, closed)
        if baseline:
            self._baseline_violations += sum(1 for ev in events if ev["kind"] == "finding")

    def _mark(self, ch: Change) -> None:
        """New folders get a fanotify mark (who writes in them); gone ones lose theirs."""
        if ch.moved_from is not None:
            self.actors.forget(ch.moved_from)
        if ch.new is not None and ch.new.kind == "d":
            self.actors.mark([ch.path])
        elif ch.old is not None and ch.old.kind == "d":
            self.actors.forget(ch.path)

    def _with_actor(self, f: Finding, path: str) -> dict[str, Any]:
        """A drift finding with who made the change (fanotify, agent/actors.py) as evidence:
        known → named in ``found`` and ``details.actor``; unknown → ``details.actor`` says why."""
        actor = self.actors.who(path, f.check in rules.WRITES)
        out = f.as_dict()
        out["details"] = {**out["details"], "actor": actor}
        if "text" in actor:
            out["found"] += f"; by {actor['text']}"
        return out

    def _open(self, subject: str) -> dict[str, str]:
        return {c: f for c, f in self.state.open_findings(subject).items() if file_scope(c)}

    # --- scanning -----------------------------------------------------------------------

    _baseline_violations = 0

    def scan_all(self, reason: str) -> list[ScanStats]:
        """Scan every sensitive path; the first time, one summary event for the baseline."""
        first = self.state.meta("baseline") is None
        self._baseline_violations = 0
        started = time.time()
        stats = []
        for root in self.roots:
            stats.append(self.scanner.scan(
                root, lambda ch: self._emit(ch, baseline=first), self.stopping))
        summary = {
            "reason": reason, "paths": self.roots, "files": sum(s.files for s in stats),
            "dirs": sum(s.dirs for s in stats), "bytes": sum(s.bytes for s in stats),
            "hashed": sum(s.hashed for s in stats), "changes": sum(s.changes for s in stats),
            "errors": sum(len(s.errors) for s in stats),
            "seconds": round(time.time() - started, 3), "hash": self.policy.agent.hash}
        events = []
        for s in stats:
            found = [rules.scan_errors(s.root, s.errors)] if s.errors else []
            e, o, c = self._reconcile(
                s.root, found, {k: v for k, v in self.state.open_findings(s.root).items()
                                if k == rules.SCAN_ERRORS.id})
            events += e
            self.state.update_open(o, c)
        if first and not self.stopping.is_set():
            summary["violations"] = self._baseline_violations
            events.append(event("agent.baseline", data=summary))
            self.state.set_meta("baseline", json.dumps(summary))
        elif reason != "periodic" or summary["changes"]:
            events.append(event("agent.rescan", data=summary))
        events += self._retention_sweep()
        self.spool.append(events)
        self.last_scan = {**summary, "at": time.time()}
        self.actors.mark(os.fsdecode(r[0]) for r in self.state.db.execute(
            "SELECT path FROM files WHERE kind = 'd'"))
        return stats

    def _retention_sweep(self) -> list[dict[str, Any]]:
        """Files that passed their retention without changing (no event makes them due)."""
        now_ns = time.time_ns()
        events: list[dict[str, Any]] = []
        for w in self.watched:
            cutoff = now_ns - w.retention_days * rules.DAY_NS
            for state in self.state.files_older_than(w.path.rstrip("/"), cutoff):
                owner = rules.owner_of(self.watched, state.path)
                if owner is not w:
                    continue
                e, o, c = self._reconcile(state.path,
                                          rules.standing(w, state, self.names, now_ns),
                                          self._open(state.path))
                events += e
                self.state.update_open(o, c)
        return events

    def self_check(self) -> None:
        """Controls whose evidence the agent re-reads locally (R-ENC's chain)."""
        from baomi.controls import get
        from baomi.controls.contract import run

        ctx = HostContext.of(self.policy, self.groups, self.enrolment.host
                             if self.enrolment else os.uname().nodename)
        for name in SELF_CHECKS:
            try:
                result = run(get(name), ctx, run_locally)
            except (OSError, subprocess.SubprocessError) as exc:
                self._error(f"self-check {name}: {exc}")
                continue
            prefix = name + "."
            open_now = self.state.open_of_check(prefix)
            by_subject: dict[str, list[Finding]] = {}
            for f in result.findings:
                by_subject.setdefault(f.subject, []).append(f)
            subjects = set(by_subject) | {s for _, s in open_now}
            events = []
            for subject in sorted(subjects):
                e, o, c = self._reconcile(subject, by_subject.get(subject, []),
                                          {k: v for (k, s), v in open_now.items()
                                           if s == subject})
                events += e
                self.state.update_open(o, c)
            self.spool.append(events)

    def ship_detections(self) -> None:
        """The antivirus scan's detections recorded since the last look, each the check's own
        finding, spooled before the position moves on (a crash in between ships a line twice,
        never loses one)."""
        av = self.policy.antivirus
        if not av.enabled:
            return
        for _ in range(8):  # at most 8 MiB a look: a huge record does not stall the loop
            since = detections.Position.parse(self.state.meta(detections.META))
            got = detections.read_new(self.detections_log, since)
            for problem in got.problems:
                self._error(problem)
            found = detection_findings(got.items, int(time.time()), av.report_days)
            self.spool.append([event("finding", finding=f.as_dict()) for f in found])
            if got.position != since:
                self.state.set_meta(detections.META,
                                    got.position.text() if got.position else "")
            if not got.more:
                return

    # --- the watcher's paths ------------------------------------------------------------

    def process(self, items: list[tuple[str, str | None]]) -> None:
        batch = Batch(self.state, lambda ch: self._emit(ch, baseline=False), ScanStats("watch"))
        subtrees: list[str] = []
        for path, moved_from in items:
            try:
                new = self.scanner.observe(path)
            except Swapped as exc:
                self._swapped(batch, exc)
                continue
            except OSError as exc:
                self._error(f"{path}: {exc.strerror or exc}")
                continue
            old = self.state.get(path)
            if moved_from is not None:
                before = self.state.get(moved_from)
                if before is not None and new is not None:
                    self._moved(batch, before, new)
                    continue
                if before is not None:  # moved on again already: the old path is gone
                    for gone in self.state.subtree(moved_from):
                        batch.compare(gone, None)
            if new is not None and new.kind == "d" and old is None:
                subtrees.append(path)  # a new directory: its contents by a scan
                continue
            if new is None and old is not None:
                for gone in self.state.subtree(path):
                    batch.compare(gone, None)
                continue
            batch.compare(old, new)
        batch.flush()
        for path in subtrees:
            if rules.owner_of(self.watched, path) is not None:
                self.scanner.scan(path, lambda ch: self._emit(ch, baseline=False),
                                  self.stopping)

    def _swapped(self, batch: Batch, exc: Swapped) -> None:
        """A folder on the way to a changed file was replaced: say so (``agent.drift.swapped``)
        and the file is gone from the tree (deleted); the link's target is never read."""
        w = rules.owner_of(self.watched, exc.path)
        if w is not None:
            self.spool.append([event("finding", finding=rules.swapped(
                w, exc.path, exc.folder, exc.now).as_dict())])
        for gone in self.state.subtree(exc.path):
            batch.compare(gone, None)

    def _moved(self, batch: Batch, before: FileState, after: FileState) -> None:
        """A file or directory moved within the sensitive paths: one finding per file."""
        src, dst = before.path, after.path
        for old in self.state.subtree(src):
            target = dst + old.path[len(src):]
            new = after if old.path == src else self.scanner.observe(target)
            if new is None:
                batch.compare(old, None)
            else:
                batch.moved(old, new)

    # --- supervising --------------------------------------------------------------------

    def supervise(self) -> None:
        if not self.watcher.healthy():
            self._error("observer not running: restarted, rescanning")
            self.watcher.restart()
            self.rescan_requested.set()
        dirs = self.state.db.execute("SELECT count(*) FROM files WHERE kind = 'd'").fetchone()[0]
        watches = inotify_watches()
        reason = None
        if watches < dirs:
            reason = (f"{watches} inotify watches for {dirs} directories "
                      "(fs.inotify.max_user_watches reached?)")
        if reason != self.polling:
            subject = ", ".join(self.roots)
            found = [rules.watch_polling(subject, reason)] if reason else []
            open_now = {k: v for k, v in self.state.open_findings(subject).items()
                        if k == rules.WATCH_POLLING.id}
            e, o, c = self._reconcile(subject, found, open_now)
            self.spool.append(e)
            self.state.update_open(o, c)
            self.polling = reason
        self._safe(self.ship_detections)
        self.write_status()

    def write_status(self) -> None:
        write_private(self.dir / "status.json", json.dumps(report.status(self), indent=2) + "\n",
                      sync=False)  # informational, rewritten every 10 s: no disk flush

    # --- running ------------------------------------------------------------------------

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run until :meth:`stop` (SIGTERM/SIGINT from the command)."""
        write_private(self.dir / "agent.pid", f"{os.getpid()}\n")
        self.spool.append([event("agent.started", data={"version": __version__,
                                                        "paths": len(self.roots)})])
        if self.shipper is not None:
            self.shipper.start()
        self._safe(self.actors.start)
        self._safe(self.watcher.start)
        self.scan_all("start")
        self._safe(self.self_check)
        self.supervise()
        if ready is not None:
            ready()
        a = self.policy.agent
        next_rescan = time.monotonic() + a.rescan_minutes * 60
        next_check = time.monotonic() + a.self_check_minutes * 60
        next_supervise = time.monotonic() + SUPERVISE
        last_status = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.polling:
                next_rescan = min(next_rescan, now + POLL_SECONDS)
            due = min(next_rescan, next_check, next_supervise)
            items, overflow = self.pending.take(max(0.0, due - now))
            if self.stopping.is_set():
                break
            if items:
                self._safe(functools.partial(self.process, items))
            now = time.monotonic()
            if overflow or self.rescan_requested.is_set() or now >= next_rescan:
                reason = ("overflow" if overflow else "requested"
                          if self.rescan_requested.is_set() else
                          "polling" if self.polling else "periodic")
                self.rescan_requested.clear()
                self._safe(functools.partial(self.scan_all, reason))
                next_rescan = time.monotonic() + a.rescan_minutes * 60
                self._safe(self.write_status)
            if now >= next_check:
                self._safe(self.self_check)
                next_check = now + a.self_check_minutes * 60
            if now >= next_supervise:
                self._safe(self.supervise)
                next_supervise = now + SUPERVISE
                last_status = now
            elif items and now - last_status >= 1.0:
                self._safe(self.write_status)  # busy: status at most once a second
                last_status = now
        self.close()

    def _safe(self, work: Callable[[], object]) -> None:
        """Run one step; an error is recorded and the agent carries on (a rescan repairs)."""
        try:
            work()
        except Exception as exc:
            self._error(f"{type(exc).__name__}: {exc}")
            self.rescan_requested.set()

    def stop(self) -> None:
        self.stopping.set()
        self.pending.wake()

    def request_rescan(self) -> None:
        self.rescan_requested.set()
        self.pending.wake()

    def close(self) -> None:
        self.watcher.stop()
        self._safe(self.actors.stop)
        if self.shipper is not None:
            self.shipper.stop()
            if self.shipper.is_alive():
                self.shipper.join(timeout=10)
            self.shipper.client.close()
        self.scanner.close()
        self._safe(self.write_status)
        self.spool.close()
        self.state.close()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "agent.pid").unlink()


def install_signals(agent: Agent) -> None:
    """SIGTERM/SIGINT stop the agent cleanly; SIGUSR1 asks for a rescan (``scan --once``)."""
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    signal.signal(signal.SIGUSR1, lambda *_: agent.request_rescan())
