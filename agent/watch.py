"""Real-time watch: watchdog over inotify, recursive, with an event filter; a coalescing queue.

The handler runs on watchdog's dispatch thread and only records *which path* changed (a dict
insert under a lock): re-stat, re-hash and judging happen on the agent's processing thread,
so a slow disk never backs up the kernel queue, and the handler cannot raise (it catches
everything: an exception would kill watchdog's thread).  Events are coalesced per path: a
path is handed over once it has been quiet for :data:`QUIET` seconds (a burst of writes to
one file is one change) or :data:`MAX_DELAY` after its first event (a file written without
pause is still reported).

Overflow: when the kernel's queue overflows (``IN_Q_OVERFLOW``: with the default
``max_queued_events`` of 16384 a burst of 100,000 creates loses most events), watchdog
rebuilds its watches; our watch group also raises :attr:`Pending.overflowed`, and the agent
rescans every sensitive path against the baseline at once.  The same happens when the
coalescing queue itself holds more than :data:`MAX_PENDING` paths (memory stays bounded in a
storm).  A dead observer thread is noticed by :meth:`Watcher.healthy` and restarted by the
agent's supervisor (followed by a rescan).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyFD

QUIET = 0.015
MAX_DELAY = 0.5
MAX_PENDING = 50_000
# Directory mtime changes (DirModifiedEvent) are left out: every create in a directory makes
# one, and the file's own event already says what changed.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileAttribEvent, DirAttribEvent,
    FileClosedEvent, FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent]


@dataclass
class Item:
    first: float
    last: float
    moved_from: str | None = None


class Pending:
    """Paths that changed, coalesced; thread-safe; bounded."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._cond = threading.Condition()
        self.overflowed = False
        self.overflows = 0
        self.events = 0
        self._woken = False

    def add(self, path: str, moved_from: str | None = None) -> None:
        now = time.monotonic()
        with self._cond:
            self.events += 1
            if moved_from is not None:
                self._items.pop(moved_from, None)  # its earlier events: the move covers them
            item = self._items.get(path)
            if item is None:
                if len(self._items) >= MAX_PENDING:
                    self._overflow_locked()
                    return
                self._items[path] = Item(now, now, moved_from)
                self._cond.notify()
            else:
                item.last = now
                if moved_from is not None:
                    item.moved_from = moved_from

    def overflow(self) -> None:
        with self._cond:
            self._overflow_locked()

    def _overflow_locked(self) -> None:
        self.overflowed = True
        self.overflows += 1
        self._items.clear()  # the rescan covers them
        self._cond.notify()

    def wake(self) -> None:
        """Make :meth:`take` return now (stop, a requested rescan)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def take(self, timeout: float | None) -> tuple[list[tuple[str, str | None]], bool]:
        """Wait up to ``timeout`` for paths that are ready; returns them (with the path each
        was moved from, if a move) and whether an overflow asks for a rescan."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                now = time.monotonic()
                if self.overflowed:
                    self.overflowed = False
                    return [], True
                if self._woken:
                    self._woken = False
                    return [], False
                ready = [(p, i.moved_from) for p, i in self._items.items()
                         if now - i.last >= QUIET or now - i.first >= MAX_DELAY]
                if ready:
                    for p, _ in ready:
                        del self._items[p]
                    return ready, False
                if self._items:
                    soonest = min(min(i.last + QUIET, i.first + MAX_DELAY)
                                  for i in self._items.values())
                    wait = soonest - now
                else:
                    wait = None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return [], False
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Handler(FileSystemEventHandler):
    """Records changed paths; never raises (an exception would kill watchdog's thread)."""

    def __init__(self, pending: Pending, errors: Callable[[str], None]) -> None:
        self.pending = pending
        self.errors = errors

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            src = os.fsdecode(event.src_path)
            if isinstance(event, (FileMovedEvent, DirMovedEvent)):
                # One item for the move: the processor replaces the old path's rows.
                self.pending.add(os.fsdecode(event.dest_path), moved_from=src)
            else:
                self.pending.add(src)
        except BaseException as exc:
            try:
                self.pending.overflow()  # we lost track: rescan
                self.errors(f"watch handler: {type(exc).__name__}: {exc}")
            except BaseException:  # noqa: S110 a handler must never raise
                pass


def _emitter(on_overflow: Callable[[], None]) -> type[InotifyEmitter]:
    """watchdog's inotify emitter whose watch group also tells us about queue overflows
    (watchdog itself only logs them and rebuilds its watches)."""

    class Group(InotifyWatchGroup):
        def on_queue_overflow(self) -> None:
            try:
                on_overflow()
            finally:
                super().on_queue_overflow()

    class Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = Group(self._inotify_fd, os.fsencode(self.watch.path),
                                  is_recursive=self.watch.is_recursive,
                                  event_mask=self.get_event_mask_from_filter(),
                                  follow_symlink=self.watch.follow_symlink)

    return Emitter


class Observer(BaseObserver):
    """An inotify observer with its own inotify instance and our emitter.  The dispatch
    thread blocks on its queue without a timeout: no wake-ups while idle."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self._fd = InotifyFD()
        self._fd.start()
        super().__init__(_emitter(on_overflow), timeout=3600, inotify_fd=self._fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._fd.stop()
        self._fd.join()


class Watcher:
    """One observer over every existing sensitive path (recursive, filtered)."""

    def __init__(self, roots: list[str], pending: Pending,
                 errors: Callable[[str], None]) -> None:
        self.roots = roots
        self.pending = pending
        self.errors = errors
        self.observer: Observer | None = None
        self.watched: list[str] = []
        self.restarts = 0

    def start(self) -> None:
        """Watch every existing root; a root that cannot be watched (e.g. the inotify watch
        limit is reached) is reported and left to the rescans (polling) until a restart
        succeeds."""
        observer = Observer(self.pending.overflow)
        handler = Handler(self.pending, self.errors)
        observer.start()
        self.observer = observer
        self.watched = []
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            try:
                observer.schedule(handler, root, recursive=True, event_filter=EVENT_FILTER)
                self.watched.append(root)
            except OSError as exc:
                self.errors(f"cannot watch {root}: {exc.strerror or exc}")

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=10)
            self.observer = None

    def healthy(self) -> bool:
        """The observer and every emitter thread are alive, and every existing root is
        watched (a root created after start needs a restart to be watched)."""
        obs = self.observer
        if obs is None or not obs.is_alive():
            return False
        if any(not e.is_alive() for e in obs.emitters):
            return False
        return all(r in self.watched for r in self.roots if os.path.isdir(r))

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()


def inotify_watches(pid: int | None = None) -> int:
    """How many inotify watches a process holds (one ``inotify wd:`` line per watch in
    /proc/PID/fdinfo of its inotify descriptors)."""
    base = f"/proc/{pid or 'self'}"
    total = 0
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"{base}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"{base}/fdinfo/{fd}", encoding="ascii", errors="replace") as info:
                total += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:
            continue
    return total
