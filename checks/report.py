"""The audit's pytest plugin: collects one :class:`~baomi.results.CheckResult` per host × check.

Wired in by ``checks/conftest.py`` (its options and :func:`configure`), so it works in plain
``pytest checks --hosts=…`` and under ``baomi audit`` alike.  The checks hand it the record
they made from the control's :class:`~baomi.controls.contract.Result` (:func:`remember`); no
assertion text is parsed.  A test that ended without a record (the host did not answer, the
observe script failed, a fixture refused) is an ``error``: the check could not be looked at.

``--baomi-results FILE`` writes the audit document (JSON, :mod:`baomi.results`) at the end;
``--baomi-progress`` prints one ``@@baomi {json}`` line per record as it is made, which
``baomi audit`` turns into its progress display.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from baomi.results import Audit, CheckResult, error, now_utc

PROGRESS = "@@baomi "
RECORD = pytest.StashKey[CheckResult]()


def remember(item: pytest.Item, result: CheckResult) -> None:
    """Called by a check with the record of its host × check."""
    item.stash[RECORD] = result


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("baomi")
    group.addoption("--baomi-results", default=None, metavar="FILE",
                    help="write the audit's results (JSON, one record per host × check)")
    group.addoption("--baomi-progress", action="store_true", default=False,
                    help="print one '@@baomi {json}' line per finished host × check")


def configure(config: pytest.Config) -> None:
    if config.getoption("baomi_results") or config.getoption("baomi_progress"):
        config.pluginmanager.register(Collector(config), "baomi-results")


def _where(item: pytest.Item) -> tuple[str, str, tuple[str, ...]]:
    """Host, check ID and clauses of a check's test item (from its parameters and marks)."""
    params = getattr(item, "callspec", None)
    values: dict[str, Any] = params.params if params else {}
    host = values.get("_testinfra_host")
    name = str(getattr(getattr(host, "backend", None), "hostname", host or "?"))
    check = str(values.get("check_id", item.name))
    clauses = tuple(str(m.args[0]) for m in item.iter_markers("clause") if m.args)
    return name, check, clauses


class Collector:
    """Records gathered during the session, written once at its end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[CheckResult] = []
        self.started = now_utc()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.config.getoption("baomi_progress"):
            sys.stdout.write(PROGRESS + json.dumps({"collected": len(session.items)}) + "\n")
            sys.stdout.flush()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None],
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if "check_id" not in getattr(getattr(item, "callspec", None), "params", {}):
            return report  # not a compliance check (a plugin's own test, say)
        made = item.stash.get(RECORD, None)
        if report.when == "call" or (report.when == "setup" and report.failed):
            if made is None and report.failed:
                host, check, clauses = _where(item)
                # pytest.fail's own message as given; any other exception with its type
                message = (str(call.excinfo.value) if call.excinfo and call.excinfo.errisinstance(
                    pytest.fail.Exception) else call.excinfo.exconly() if call.excinfo
                    else report.longreprtext)
                made = error(host, check, clauses, message.strip().splitlines()[-1]
                             if message.strip() else "failed")
            if made is not None:
                self.add(dataclasses.replace(made, duration=report.duration))
        return report

    def add(self, made: CheckResult) -> None:
        self.records.append(made)
        if self.config.getoption("baomi_progress"):
            line = {"host": made.host, "check": made.check, "status": made.status}
            sys.stdout.write(PROGRESS + json.dumps(line) + "\n")
            sys.stdout.flush()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        target = self.config.getoption("baomi_results")
        if not target:
            return
        audit = Audit(self.records, started=self.started, finished=now_utc())
        policy_path = self.config.getoption("policy", None)
        if policy_path and Path(policy_path).is_file():
            raw = Path(policy_path).read_bytes()
            audit.policy = {"file": str(Path(policy_path).resolve()),
                            "sha256": hashlib.sha256(raw).hexdigest()}
        hosts = self.config.getoption("hosts", None)
        audit.scope = {"hosts": sorted(hosts.split(",")) if hosts else []}
        out = Path(target)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        tmp.write_text(json.dumps(audit.as_dict(), ensure_ascii=False, indent=1),
                       encoding="utf-8")
        tmp.replace(out)
