"""Scans: walk a sensitive path, compare every entry with the baseline, read ahead, hash.

Incremental: an entry whose size, mtime, ctime and inode equal the baseline's is not opened
(one ``lstat`` from ``scandir``); a new or changed one is opened and its read started at once
(``POSIX_FADV_WILLNEED``) and read, ``fstat``'d and hashed :data:`IN_FLIGHT` files later, by
then mostly in memory: one thread keeps hundreds of reads in flight.  Sixteen reader threads
did worse on two cores (every small file's hash hands the GIL over; docs/agent.md has the
figures); the pool now hashes only files of :data:`LARGE` bytes or more.  A scan that has
read :data:`REMOTE_AFTER` files hands the rest to its reader process
(:mod:`baomi.agent.reader`: the same reading on a second core, each folder's own descriptor
passed to it), so a first baseline uses two cores.  Each folder is
listed in name order and its sub-folders walked in name order, so the baseline's rows are
written almost in key order.  The walk reads the baseline one directory at a time and keeps
a bounded number of files in flight, so memory stays flat whatever the tree's size.  The
whole service runs at nice 10 and best-effort I/O priority 7 (its unit); the pool's threads
drop themselves to nice 19.

The caller gets :class:`Change` s in chunks through ``emit`` *before* the baseline is updated
(``emit`` spools findings durably first; a crash in between means the change is found again
by the next scan, never lost).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from baomi.agent import reader
from baomi.agent.files import FileState, finish, from_stat, observe_under, open_file, open_parent
from baomi.agent.reader import Reader
from baomi.agent.state import State

CHUNK = 4000
IN_FLIGHT = 256  # files opened, their reads started, before the oldest is read
LARGE = 1 << 20  # files this big or bigger are hashed by the reader pool
REMOTE_AFTER = 2000  # files read in-process before a scan starts its reader process
Asked = list[tuple[str, str, "FileState | None"]]  # path, name, baseline: one request
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Change(NamedTuple):
    """A path whose state differs from the baseline (``old`` None: new; ``new`` None: gone;
    ``moved_from``: the path it had before, when the watcher saw the move).  A named tuple:
    a first baseline makes one per file."""

    old: FileState | None
    new: FileState | None
    moved_from: str | None = None

    @property
    def path(self) -> str:
        state = self.new or self.old
        assert state is not None  # noqa: S101 type narrowing
        return state.path


@dataclass
class ScanStats:
    root: str
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    hashed: int = 0
    changes: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def lower_priority() -> None:
    """This thread at nice 19 and the lowest best-effort I/O priority (Linux: per thread)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
        import psutil

        psutil.Process(tid).ionice(psutil.IOPRIO_CLASS_BE, 7)
    except (OSError, ImportError, AttributeError):
        pass  # best effort: a scan at normal priority is slower for others, not wrong


def differs(old: FileState, new: FileState) -> bool:
    return (old.kind, old.digest, old.mode, old.uid, old.gid) != (
        new.kind, new.digest, new.mode, new.uid, new.gid) or old.path != new.path


class Scanner:
    """Owned by the agent's processing thread (it alone writes the baseline)."""

    def __init__(self, state: State, algorithm: str, max_bytes: int, workers: int = 4,
                 roots: list[str] | None = None, remote: bool = True) -> None:
        self.state = state
        self.remote = remote  # big scans read in a second process (agent/reader.py)
        self.roots = sorted(roots or [], key=len, reverse=True)
        self.algorithm = algorithm
        self.max_bytes = max_bytes
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="baomi-hash",
                                       initializer=lower_priority)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def root_of(self, path: str) -> str:
        """The sensitive path PATH is under (the longest), or PATH itself when none is."""
        return next((r for r in self.roots if path == r or path.startswith(r.rstrip("/") + "/")),
                    path)

    def observe(self, path: str) -> FileState | None:
        """One path, reached from its sensitive path without following a link
        (:class:`baomi.agent.files.Swapped` when a folder on the way was replaced)."""
        return observe_under(self.root_of(path), path, self.algorithm, self.max_bytes)

    def scan(self, root: str, emit: Callable[[list[Change]], None],
             stop: threading.Event | None = None) -> ScanStats:
        """Compare the tree under ``root`` with the baseline; report and record every change."""
        started = time.monotonic()
        stats = ScanStats(root)
        batch = Batch(self.state, emit, stats)
        reads = _Reads(self, batch)
        base = self.root_of(root) if self.roots else root  # no link followed below it
        try:
            top = self.observe(root)
        except OSError as exc:
            stats.errors.append(f"{root}: {exc.strerror or exc}")
            return stats
        old_top = self.state.get(root)
        batch.compare(old_top, top)
        stack: list[tuple[str, tuple[int, int] | None]] = (
            [(root, None)] if top is not None and top.kind == "d" else [])
        try:
            while stack:
                if stop is not None and stop.is_set():
                    break
                directory, seen_as = stack.pop()
                fd = self._open_dir(base, directory, seen_as, stats)
                if fd is None:
                    continue
                try:
                    rows = self.state.children(directory)
                    try:
                        entries = sorted(os.scandir(fd), key=_name)
                    except OSError as exc:
                        stats.errors.append(f"{directory}: {exc.strerror or exc}")
                        continue  # unreadable: keep its baseline rather than report it deleted
                    subdirs = len(stack)
                    for entry in entries:
                        path = f"{directory}/{entry.name}"
                        old = rows.pop(entry.name, None)
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                st = entry.stat(follow_symlinks=False)
                                stack.append((path, (st.st_dev, st.st_ino)))
                                stats.dirs += 1
                                batch.compare(old, from_stat(path, st, None))
                                continue
                            if old is not None:
                                st = entry.stat(follow_symlinks=False)
                                if old.same_inode_data(from_stat(path, st, old.digest)):
                                    stats.files += 1
                                    stats.bytes += st.st_size
                                    continue
                        except FileNotFoundError:
                            if old is not None:
                                batch.compare(old, None)
                            continue
                        except OSError as exc:
                            stats.errors.append(f"{path}: {exc.strerror or exc}")
                            continue
                        reads.add(fd, path, entry.name, old)
                    reads.end_folder()
                    # popped in name order: the baseline is then written almost in key
                    # order (measured: 8x faster inserts than in the folder's own order)
                    stack[subdirs:] = stack[subdirs:][::-1]
                finally:
                    os.close(fd)
                for gone in rows.values():
                    for state in self.state.subtree(gone.path):
                        batch.compare(state, None)
            reads.drain(0)
        finally:
            reads.close()
        batch.flush()
        stats.seconds = time.monotonic() - started
        return stats

    @staticmethod
    def _open_dir(base: str, path: str, seen_as: tuple[int, int] | None,
                  stats: ScanStats) -> int | None:
        """The folder, reached from its sensitive path without following a link, and only
        if it is the folder its parent listed (a local user swapping it for a link to /
        cannot send the walk there)."""
        try:
            found = open_parent(base, path)
            if found is None:
                return None
            parent, name = found
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
        except (FileNotFoundError, NotADirectoryError):
            return None  # gone meanwhile: its parent's listing reports it
        except OSError as exc:
            stats.errors.append(f"{path}: {exc.strerror or exc}")
            return None
        st = os.fstat(fd)
        if seen_as is not None and (st.st_dev, st.st_ino) != seen_as:
            os.close(fd)
            stats.errors.append(f"{path}: replaced while it was scanned; not followed")
            return None
        return fd


class _Open(NamedTuple):
    """A file opened, its read started: the descriptor and its ``fstat``."""

    fd: int
    st: os.stat_result


Opened = _Open | FileState | OSError | None  # to read, or already the answer


class _Reads:
    """Files a scan must read, oldest first: each is opened (``openat`` relative to its
    listed folder, no link followed) and its read started (readahead) when the walk reaches
    it, and read and hashed :data:`IN_FLIGHT` files later, by then mostly in memory.  One
    thread keeps hundreds of reads in flight without the GIL hand-offs that made 16 reader
    threads slower (docs/agent.md); files of :data:`LARGE` bytes or more are hashed by the
    reader pool, whose threads run at nice 19 (hashing them is CPU, and ``hashlib`` lets go
    of the GIL for it)."""

    def __init__(self, scanner: Scanner, batch: Batch) -> None:
        self.scanner = scanner
        self.batch = batch
        self.queue: deque[tuple[str, FileState | None, Opened | Future[FileState]]] = deque()
        self.read_here = 0
        self.remote: Reader | None = None
        self.remote_failed = False
        self.group: Asked = []
        self.group_fd = -1
        self.asked: deque[Asked] = deque()

    def add(self, dir_fd: int, path: str, name: str, old: FileState | None) -> None:
        if self.remote is None and not self.remote_failed and self.read_here >= REMOTE_AFTER \
                and self.scanner.remote:
            self._start_remote()
        if self.remote is not None:
            if self.group and (self.group_fd != dir_fd or len(self.group) >= reader.CHUNK):
                self.end_folder()
            self.group.append((path, name, old))
            self.group_fd = dir_fd
            return
        self.read_here += 1
        s = self.scanner
        opened: Opened | Future[FileState]
        try:
            got = open_file(path, dir_fd, name, readahead=True)
            if isinstance(got, int):
                try:
                    st = os.fstat(got)
                except OSError:
                    os.close(got)
                    raise
                if st.st_size >= LARGE and stat.S_ISREG(st.st_mode) and st.st_size <= s.max_bytes:
                    opened = s.pool.submit(finish, path, got, s.algorithm, s.max_bytes, st)
                else:
                    opened = _Open(got, st)
            else:
                opened = got
        except OSError as exc:
            opened = exc
        self.queue.append((path, old, opened))
        if len(self.queue) > IN_FLIGHT:
            self.drain(IN_FLIGHT)

    # --- the reader process (big scans) ---------------------------------------------------

    def _start_remote(self) -> None:
        try:
            self.remote = Reader(self.scanner.algorithm, self.scanner.max_bytes)
        except OSError as exc:
            self.remote_failed = True  # read here, as small scans do
            self.batch.stats.errors.append(f"scan reader process: {exc.strerror or exc}")

    def end_folder(self) -> None:
        """The folder's names gathered so far go to the reader (with its descriptor, which
        the caller closes after this: the reader holds its own copy)."""
        if not self.group:
            return
        group, self.group = self.group, []
        if self.remote is not None:
            try:
                self.remote.ask(self.group_fd, [name for _, name, _ in group])
                self.asked.append(group)
            except OSError:
                self._remote_died()
                self.remote = None
        if self.remote is None:  # died: this folder is still open, read it here
            for path, name, old in group:
                self.add(self.group_fd, path, name, old)
            return
        while len(self.asked) > reader.PENDING:
            self._receive()

    def _receive(self) -> None:
        assert self.remote is not None  # noqa: S101 type narrowing
        group = self.asked.popleft()
        try:
            answers = self.remote.answer()
        except (EOFError, OSError):
            self.asked.appendleft(group)
            self._remote_died()
            return
        self._collect(zip([p for p, _, _ in group], [o for _, _, o in group],
                          [reader.state_of(p, a) for (p, _, _), a in zip(group, answers,
                                                                          strict=True)],
                          strict=True))

    def _remote_died(self) -> None:
        """What the reader had not answered is an error of this scan (a scan-errors finding);
        those files keep their baseline rows and the next scan reads them.  The rest of this
        scan reads here."""
        stats = self.batch.stats
        lost = sum(len(g) for g in self.asked)
        if lost:
            stats.errors.append(f"scan reader process ended; {lost} file(s) not read, "
                                "left for the next scan")
        self.asked.clear()
        if self.remote is not None:
            self.remote.close()
        self.remote, self.remote_failed = None, True

    def _collect(self, results: Any) -> None:
        stats, compare = self.batch.stats, self.batch.compare
        for path, old, new in results:
            if isinstance(new, OSError):
                stats.errors.append(f"{path}: {new.strerror or new}")
                continue
            if new is not None:
                stats.files += 1
                stats.bytes += new.size
                if new.digest is not None:
                    stats.hashed += 1
            compare(old, new)

    def drain(self, keep: int) -> None:
        if keep == 0:
            self.end_folder()
            while self.asked and self.remote is not None:
                self._receive()
        self._collect(self._read_here(keep))

    def _read_here(self, keep: int) -> Iterator[tuple[str, FileState | None,
                                                      FileState | OSError | None]]:
        """The files opened here, oldest first, read and hashed until ``keep`` are left."""
        queue, algorithm, max_bytes = self.queue, self.scanner.algorithm, self.scanner.max_bytes
        while len(queue) > keep:
            path, old, opened = queue.popleft()
            new: FileState | OSError | None
            try:
                if type(opened) is _Open:
                    new = finish(path, opened.fd, algorithm, max_bytes, opened.st)
                elif isinstance(opened, Future):
                    new = opened.result()
                else:
                    new = opened  # type: ignore[assignment]
            except OSError as exc:
                new = exc
            yield path, old, new

    def close(self) -> None:
        """Descriptors of files not read (the scan stopped or failed) are closed; the reader
        process ends."""
        if self.remote is not None:
            self.remote.close()
            self.remote = None
        while self.queue:
            _, _, opened = self.queue.popleft()
            if isinstance(opened, _Open):
                os.close(opened.fd)
            elif isinstance(opened, Future):
                with contextlib.suppress(OSError, CancelledError):
                    opened.result()  # the reader closes its own descriptor


class Batch:
    """Changes and baseline writes, flushed every :data:`CHUNK` entries: the changes go to
    ``emit`` (which spools them) before the baseline is written.  (Writing the rows from a
    second thread was tried and measured slower: SQLite lets go of the GIL for every row, and
    each hand-back waits on the scanning thread — 8.5 s → 13–14 s for 200,000 files.)"""

    def __init__(self, state: State, emit: Callable[[list[Change]], None],
                 stats: ScanStats) -> None:
        self.state = state
        self.emit = emit
        self.stats = stats
        self.changes: list[Change] = []
        self.puts: list[FileState] = []
        self.deletes: list[str] = []

    def compare(self, old: FileState | None, new: FileState | None) -> None:
        if new is None:
            if old is None:
                return
            self.deletes.append(old.path)
            self.changes.append(Change(old, None))
        else:
            if old is not None and not differs(old, new):
                if not old.same_inode_data(new):
                    self.puts.append(new)  # e.g. touched: record the new times, no finding
            else:
                self.changes.append(Change(old, new))
                self.puts.append(new)
        if len(self.puts) + len(self.deletes) >= CHUNK:
            self.flush()

    def moved(self, old: FileState, new: FileState) -> None:
        """A move the watcher saw: one change, the old path's rows replaced by the new."""
        self.changes.append(Change(old, new, moved_from=old.path))
        self.deletes.append(old.path)
        self.puts.append(new)

    def flush(self) -> None:
        if self.changes:
            self.emit(self.changes)  # spooled first
            self.stats.changes += len(self.changes)
        with self.state.transaction():
            for path in self.deletes:
                self.state.delete_subtree(path)
            self.state.put(self.puts)
        self.changes, self.puts, self.deletes = [], [], []
