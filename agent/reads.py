"""A scan's reads: the files it must open, read and hash, in the order the walk found them.

In-process (:class:`Reads`): each file is opened relative to its listed folder (no link
followed) and its read started when the walk reaches it, then read and hashed
:data:`IN_FLIGHT` files later; files of :data:`LARGE` bytes or more go to the scanner's
hashing pool.  After :data:`REMOTE_AFTER` files, the rest of the scan goes to its reader
process (:mod:`baomi.agent.reader`), one folder's names and descriptor at a time; answers come
back in order.  Every result reaches the scan's :class:`~baomi.agent.scan.Batch` through one
place (:meth:`Reads._collect`), which also keeps the scan's tally.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any, NamedTuple

from baomi.agent import reader
from baomi.agent.files import FileState, finish, open_file
from baomi.agent.reader import Reader

if TYPE_CHECKING:
    from baomi.agent.scan import Batch, Scanner

IN_FLIGHT = 256  # files opened, their reads started, before the oldest is read
LARGE = 1 << 20  # files this big or bigger are hashed by the reader pool
REMOTE_AFTER = 2000  # files read in-process before a scan starts its reader process
Asked = list[tuple[str, str, "FileState | None"]]  # path, name, baseline: one request


class Open(NamedTuple):
    """A file opened, its read started: the descriptor and its ``fstat``."""

    fd: int
    st: os.stat_result


Opened = Open | FileState | OSError | None  # to read, or already the answer


class Reads:
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
                    opened = Open(got, st)
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
                if type(opened) is Open:
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
            if isinstance(opened, Open):
                os.close(opened.fd)
            elif isinstance(opened, Future):
                with contextlib.suppress(OSError, CancelledError):
                    opened.result()  # the reader closes its own descriptor
