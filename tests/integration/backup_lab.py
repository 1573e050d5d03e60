"""R-BAK's integration labs: an escrow store of the test's own (key pair made,
$BAOMI_ESCROW_DIR set for the run) and the srv1 (plain) / srv2 (systemd) / bak1 lab with data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from baomi.controller.escrow import EscrowStore
from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab

CLIENTS = ["srv1", "srv2"]


def identity_file(factory: pytest.TempPathFactory) -> Path:
    """The store's offline identity (what opens the escrowed secrets)."""
    return factory.getbasetemp() / "escrow.identity"


@contextmanager
def own_escrow(factory: pytest.TempPathFactory) -> Iterator[EscrowStore]:
    """A fresh store as $BAOMI_ESCROW_DIR while the block runs (the previous value restored).
    Its identity is removed when the block ends, so the next module's store can make its own."""
    directory = factory.mktemp("escrow")
    store = EscrowStore(directory)
    identity = identity_file(factory)
    store.keygen(identity)
    previous = os.environ.get("BAOMI_ESCROW_DIR")
    os.environ["BAOMI_ESCROW_DIR"] = str(directory)
    try:
        yield store
    finally:
        identity.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop("BAOMI_ESCROW_DIR", None)
        else:
            os.environ["BAOMI_ESCROW_DIR"] = previous


@contextmanager
def backup_lab(factory: pytest.TempPathFactory, prefix: str) -> Iterator[LabHandle]:
    """srv1 (plain, cron), srv2 (systemd, timer), bak1, with files under the clients' sensitive
    paths, and an escrow of their own."""
    with own_escrow(factory), running_lab(f"{prefix}{os.getpid() % 10_000_000}",
                                          Request(servers=2, systemd_servers=1,
                                                  backup=1)) as handle:
        for host in CLIENTS:
            handle.ssh(host, "mkdir -p /srv/customers /srv/contracts && for i in 1 2 3 4 "
                             "5 6; do head -c $((i*7000)) /dev/urandom > /srv/customers/f$i;"
                             " done && echo signed > /srv/contracts/c1")
        yield handle
