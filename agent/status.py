"""What the agent says about itself: the heartbeat's figures for the collector, and the full
status ``baomi agent status`` reads from ``status.json`` (written by the agent every
supervision round, at most once a second while busy)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from baomi import __version__
from baomi.agent.watch import inotify_watches

if TYPE_CHECKING:
    from baomi.agent.service import Agent


def health(agent: Agent) -> dict[str, Any]:
    """Figures for the collector's heartbeat (numbers, strings, booleans only)."""
    depth = agent.spool.depth()
    return {"version": __version__, "spool_events": depth.events,
            "spool_bytes": depth.bytes, "dropped": depth.dropped,
            "last_scan": agent.last_scan.get("at"), "files": agent.last_scan.get("files"),
            "watched_paths": len(agent.watcher.watched), "polling": agent.polling is not None,
            "overflows": agent.pending.overflows, "restarts": agent.watcher.restarts}


def status(agent: Agent) -> dict[str, Any]:
    """Last scan, paths and watches, spool, collector, who-changed-it, own RSS and CPU."""
    import psutil

    me = psutil.Process()
    depth = agent.spool.depth()
    ship = agent.shipper.status if agent.shipper else None
    actors = agent.actors
    return {
        "pid": os.getpid(), "version": __version__, "started": agent.started,
        "paths": agent.roots, "watched": agent.watcher.watched,
        "inotify_watches": inotify_watches(), "polling": agent.polling,
        "last_scan": agent.last_scan, "baseline_entries": agent.state.count(),
        "spool": {"events": depth.events, "bytes": depth.bytes, "last_seq": depth.last_seq,
                  "acked_seq": depth.acked_seq, "dropped": depth.dropped},
        "collector": None if ship is None else {
            "url": agent.enrolment.collector if agent.enrolment else None,
            "reachable": ship.reachable, "last_ok": ship.last_ok,
            "last_error": ship.last_error, "sent": ship.sent},
        "events_seen": agent.pending.events, "overflows": agent.pending.overflows,
        "actors": actors.unavailable or (f"fanotify: {len(actors.marked)} folders marked, "
                                         f"{len(actors.unmarked)} not, {actors.events} "
                                         "writes seen"),
        "antivirus_record": _antivirus_record(agent),
        "observer_restarts": agent.watcher.restarts, "errors": agent.errors[-5:],
        "rss_bytes": me.memory_info().rss, "cpu_seconds": sum(me.cpu_times()[:2]),
        "written": time.time(),
    }


def _antivirus_record(agent: Agent) -> dict[str, Any] | None:
    """The antivirus scan's record the agent ships (R-SEC) and how far it has read it."""
    from baomi.agent import detections

    if not agent.policy.antivirus.enabled:
        return None
    at = detections.Position.parse(agent.state.meta(detections.META))
    return {"path": str(agent.detections_log), "offset": at.offset if at else 0}
