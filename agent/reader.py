"""A second process that reads and hashes a scan's files, so a big scan uses two cores.

Why a process: the scan's Python work (walk, compare, baseline rows) and its reading work
(open, read ahead, ``fstat``, read, SHA-256) each take about half of a first baseline's CPU,
and threads cannot share it out (the GIL: measured slower, docs/agent.md).  So a scan that
has many files to read starts this reader (``spawn``: a fresh interpreter, nothing of the
agent's threads or locks) at nice 19, and hands it each folder's names in chunks together
with the folder's open descriptor (``SCM_RIGHTS``): the reader opens every name relative to
that very descriptor with the same flags as the agent (:func:`baomi.agent.files.open_file`:
no link followed, a FIFO never blocks), so a folder swapped for a link after it was listed
changes nothing.  It sends back, in order, each file's state without its path, ``None`` for
a file gone meanwhile, or ``(errno, message)``.

Bounded: at most :data:`PENDING` chunks of at most :data:`CHUNK` names are outstanding, so
neither side can block the other on a full socket (a reply is at most ~100 bytes a file,
far below the socket's buffer).  The reader ends with the scan; if it dies, the scan reads
what it had asked in-process (nothing is lost, the scan only gets slower).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections import deque
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

from baomi.agent.files import FileState, finish, open_file

CHUNK = 256  # names a request carries at most
PENDING = 4  # requests outstanding at most
IN_FLIGHT = 256  # files the reader keeps opened with their reads started

Answer = tuple[Any, ...] | None  # FileState's fields but the path | (errno, message) | gone


def serve(conn: Connection, algorithm: str, max_bytes: int) -> None:
    """The reader's loop: take requests (names + the folder's descriptor) while fewer than
    :data:`IN_FLIGHT` files are open, opening each name and starting its read; then finish
    the oldest request (``fstat``, read, hash) and send its answers."""
    waiting: deque[tuple[list[Answer], list[tuple[str, Any]]]] = deque()
    opened = 0
    while True:
        while not waiting or (opened < IN_FLIGHT and conn.poll(0)):
            names = conn.recv()
            if names is None:
                return
            dir_fd = reduction.recv_handle(conn)
            todo: list[tuple[str, Any]] = []
            try:
                for name in names:
                    try:
                        todo.append((name, open_file(name, dir_fd, name, readahead=True)))
                    except OSError as exc:
                        todo.append((name, exc))
            finally:
                os.close(dir_fd)
            opened += len(todo)
            waiting.append(([], todo))
        answers, todo = waiting.popleft()
        for name, got in todo:
            opened -= 1
            if isinstance(got, int):
                try:
                    got = finish(name, got, algorithm, max_bytes)
                except OSError as exc:
                    got = exc
            if isinstance(got, OSError):
                answers.append((got.errno or 0, got.strerror or str(got)))
            else:
                answers.append(None if got is None else tuple(got[1:]))
        conn.send(answers)


class Reader:
    """The agent's side: a ``python -m baomi.agent.reader`` child on one end of a socket
    pair; requests in order, answers in the same order."""

    def __init__(self, algorithm: str, max_bytes: int) -> None:
        mine, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(  # our own interpreter and module
                [sys.executable, "-m", "baomi.agent.reader", str(theirs.fileno()), algorithm,
                 str(max_bytes)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                close_fds=True)
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self.outstanding = 0

    def ask(self, dir_fd: int, names: list[str]) -> None:
        """Ask for NAMES of the open folder DIR_FD (the caller keeps its descriptor)."""
        self.conn.send(names)
        reduction.send_handle(self.conn, dir_fd, self.proc.pid)
        self.outstanding += 1

    def answer(self) -> list[Answer]:
        """The oldest request's answers (EOFError or OSError: the reader died)."""
        got: list[Answer] = self.conn.recv()
        self.outstanding -= 1
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def state_of(path: str, answer: Answer) -> FileState | OSError | None:
    """An answer as the scan's value for PATH."""
    if answer is None:
        return None
    if len(answer) == 2:
        return OSError(int(answer[0]), str(answer[1]))
    return FileState(path, *answer)


if __name__ == "__main__":
    with contextlib.suppress(OSError):
        os.nice(9)  # the agent runs at 10: its reader at 19
    serve(Connection(int(sys.argv[1])), sys.argv[2], int(sys.argv[3]))
