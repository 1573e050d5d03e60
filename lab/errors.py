"""One error type the CLI turns into a one-line message (exit 1) instead of a traceback."""

from __future__ import annotations


class LabError(Exception):
    """Something the user can act on: what went wrong, where, what to do."""


class NotRootError(LabError):
    """The lab needs root (namespaces, mounts, bridges); the CLI exits 2 for it."""
