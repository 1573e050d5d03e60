"""Root's side of HR's offboarding on a deployed collector (R-OFF, R-RET).

``python -m baomi.collector.offboard_runner FOLDER``, run by ``baomi-offboard.service`` (root,
sandboxed, SSH out), started by ``baomi-offboard.path`` when the dashboard records a request
and by ``baomi-offboard.timer`` every 15 minutes (a missed trigger, another collector's
request on a shared PostgreSQL, the daily purge).

Threat model: the operator and the collector host are trusted; HR's web input, the web
service's database and anything a fleet host prints are not.  The web service (user
``baomi-collector``) only records HR's request as a ``queued`` row and touches a trigger
file: it never holds the fleet's key (root's, ``/etc/baomi/collector/fleet``) and passes root
no argument (the unit's command line is fixed).  For each queued request this runner

1. takes it (one conditional UPDATE: two runners never take the same request), with the
   fleet inventory's hosts as its rows (never hosts named by the row);
2. judges it again with the fleet's policy (:func:`offboard_core.recheck`: user name, root,
   protected accounts, dates, ticket, reason, operator), a refused row is ``refused`` on every
   host with the reason and a line in the hash-chained log;
3. runs ``baomi offboard USER --limit HOST --json`` per host (at most 4 at once), the same
   code path as the command line and the in-process runs (``--name=VALUE``: a value starting
   with ``-`` stays a value), with the fleet folder's inventory, pinned known_hosts and key,
   and the ledger in ``/var/lib/baomi-offboard`` (root 0700), writing each host's outcome as
   its run ends (the request page polls it).

Then, from ``purge_hour`` UTC on, it claims the day and runs ``--purge-due`` (the web service
does not when it is told the runner exists: ``BAOMI_OFFBOARD_RUNNER=systemd``).

Every database step runs in a forked child that drops to the owner of the collector's folder
(:func:`service_session._as_owner`): root never opens a file there (the service user could
have planted a link at ``collector.db-wal``) and an SQLite journal stays the service's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

import click

from baomi import fleet_access as fleet
from baomi.collector import credentials, store
from baomi.collector.service_session import _as_owner, _in_database
from baomi.collector.store import Principal
from baomi.collector.web import offboard_core as oc

PARALLEL = 4
HOST_TIMEOUT = 900
PURGE_TIMEOUT = 3 * 3600
MAX_REQUESTS = 50  # per run; the timer's next run takes the rest
SESSION_NAME = "collector (offboarding)"
SESSION_HOURS = PURGE_TIMEOUT / 3600 + 1


class Runner:
    def __init__(self, folder: Path, inventory: str = fleet.INVENTORY,
                 policy: str = fleet.POLICY, state: str = fleet.OFFBOARD_STATE,
                 ca: str = fleet.AUDIT_CA) -> None:
        self.folder = folder
        self.inventory = inventory
        self.policy_file = policy
        self.state = Path(state)
        self.ca = ca

    # ---- the database, as the folder's owner ------------------------------------------------

    def db(self, work: Callable[[Any], Any]) -> Any:
        answer = _as_owner(self.folder, lambda: {"v": _in_database(self.folder, None, work)})
        return answer["v"]

    def claim(self, day: str) -> bool:
        """Claim the day's purge; False when another collector has it (on PostgreSQL also
        when it inserted the day at the same moment)."""
        from baomi.collector.db import Conflict

        def work() -> dict[str, Any]:
            try:
                return {"v": _in_database(self.folder, None, lambda tx: oc.claim_day(tx, day))}
            except Conflict:
                return {"v": False}

        return bool(_as_owner(self.folder, work)["v"])

    def config(self) -> dict[str, Any]:
        """collector.toml's purge hour and port; the trigger removed first (as the folder's
        owner), so a request recorded from now on starts the runner again."""
        def read() -> dict[str, Any]:
            from baomi.collector.config import load, split_listen

            (self.folder / fleet.OFFBOARD_TRIGGER).unlink(missing_ok=True)
            config = load(self.folder)
            return {"purge_hour": config.purge_hour,
                    "port": split_listen(config.listen, "collector.toml listen")[1]}

        return _as_owner(self.folder, read)

    # ---- runs ---------------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "baomi", "offboard", *args,
                f"--inventory={self.inventory}", f"--policy={self.policy_file}", "--json"]

    def env(self) -> dict[str, str]:
        """A fixed environment (not the unit's: its database URL stays out of the runs)."""
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                "HOME": str(self.state), "BAOMI_STATE_DIR": str(self.state)}

    def start(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
        self.state.mkdir(mode=0o700, exist_ok=True)
        # closed by collect(), after the run (the files outlive this function)
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
        proc = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, cwd=str(self.state))
        return proc, out, err

    @staticmethod
    def collect(out: IO[bytes], err: IO[bytes]) -> tuple[str, str]:
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read(4 * 1024 * 1024).decode(errors="replace"))
            f.close()
        return texts[0], texts[1]

    def run_hosts(self, job: dict[str, Any], hosts: list[str]) -> None:
        """Every host's ``baomi offboard --limit HOST``, at most :data:`PARALLEL` at once, each
        host's row written as its run ends (no threads: the database steps fork)."""
        rid = int(job["id"])
        waiting = list(hosts)
        running: dict[str, tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes], float]] = {}
        while waiting or running:
            while waiting and len(running) < PARALLEL:
                host = waiting.pop(0)
                self.db(partial(oc.set_host, request_id=rid, host=host, state="running",
                                detail=""))
                running[host] = (*self.start(self.argv(
                    job["user"], f"--ticket={job['ticket']}", f"--reason={job['reason']}",
                    f"--effective={job['effective']}", f"--limit={host}",
                    f"--operator={job['created_by']} (dashboard)")), time.monotonic())
            time.sleep(0.2)
            for host, (proc, out, err, began) in list(running.items()):
                if proc.poll() is None and time.monotonic() - began < HOST_TIMEOUT:
                    continue
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                    self.collect(out, err)
                    state, detail = "pending", f"no answer within {HOST_TIMEOUT} s"
                else:
                    state, detail = oc.host_outcome(host, proc.returncode, *self.collect(out, err))
                del running[host]
                detail = detail[:500]
                self.db(partial(oc.set_host, request_id=rid, host=host, state=state,
                                detail=detail))

    def records_session(self, port: int) -> Callable[[], None]:
        """With ``collector.records: collector`` the runs write the ledger through this
        collector's API: a session of the collector itself (role ``it``) in the run's state
        folder, as in the in-process runs; the function that ends it."""
        from baomi.policy import load as load_policy

        if load_policy(self.policy_file).collector.records != "collector":
            return lambda: None
        made = self.db(lambda tx: store.new_session(tx, SESSION_NAME, "it", SESSION_HOURS))
        oc.write_child_session(self.state, f"https://localhost:{port}", self.ca, made)
        token = str(made["token"])

        def end() -> None:
            (self.state / "session.json").unlink(missing_ok=True)
            self.db(partial(store.end_session,
                            principal=Principal("it", SESSION_NAME,
                                                token=credentials.digest(token))))

        return end

    def requests(self, hosts: list[str], today: date, port: int) -> int:
        from baomi.policy import load as load_policy

        policy = load_policy(self.policy_file)
        done = 0
        while done < MAX_REQUESTS:
            job = self.db(lambda tx: oc.claim_next(tx, hosts))
            if job is None:
                return done
            done += 1
            reason = oc.recheck(job, policy, today)
            if reason is not None:
                click.echo(f"request {job['id']}: refused: {reason}", err=True)
                self.db(partial(oc.refuse_request, request_id=job["id"], hosts=hosts,
                                reason=reason))
                continue
            click.echo(f"request {job['id']}: {job['user']} on {len(hosts)} hosts")
            end = self.records_session(port)
            try:
                self.run_hosts(job, hosts)
            finally:
                end()
                self.db(partial(oc.finish, request_id=job["id"]))
        return done

    def purge(self, now: datetime, purge_hour: int, port: int) -> str | None:
        """The day's ``--purge-due`` once ``purge_hour`` has come and no collector has it."""
        day = now.date().isoformat()
        if now.hour < purge_hour or not self.claim(day):
            return None
        end = self.records_session(port)
        try:
            proc, out, err = self.start(self.argv("--purge-due", f"--now={day}",
                                                  "--operator=collector (daily purge)"))
            try:
                code = proc.wait(PURGE_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            stdout, stderr = self.collect(out, err)
        finally:
            end()
        events: list[dict[str, Any]] = next(
            (d["events"] for d in reversed(oc.json_documents(stdout))
             if isinstance(d.get("events"), list)), [])
        counts: dict[str, int] = {}
        for e in events:
            counts[str(e.get("state"))] = counts.get(str(e.get("state")), 0) + 1
        detail = (", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                  or (stderr.strip().splitlines() or ["nothing frozen"])[-1][:500])
        state = "ok" if code == 0 else "attention"
        self.db(lambda tx: oc.purge_done(tx, day, state, detail))
        return f"purge {day}: {state} ({detail})"

    def run(self, now: datetime | None = None) -> None:
        from baomi.inventory import read as read_inventory

        now = now or datetime.now(UTC)
        facts = self.config()
        hosts = sorted(read_inventory(self.inventory))
        stale = self.db(lambda tx: oc.stale(tx, time.time() - 2 * HOST_TIMEOUT))
        if stale:
            click.echo(f"{stale} interrupted request(s) marked pending", err=True)
        count = self.requests(hosts, now.date(), facts["port"])
        said = self.purge(now, facts["purge_hour"], facts["port"])
        if said:  # requests recorded during the purge's hours run now
            count += self.requests(hosts, now.date(), facts["port"])
        click.echo(f"{count} request(s) run" + (f"; {said}" if said else ""))


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
def main(folder: str) -> None:
    """Run the queued offboarding requests of the collector in FOLDER (root's runner)."""
    from baomi.inventory import InventoryError
    from baomi.policy import PolicyError

    if os.geteuid() != 0:
        raise click.ClickException("the offboarding runner runs as root (baomi-offboard."
                                   "service): it uses the fleet's key")
    try:
        Runner(Path(folder)).run()
    except (InventoryError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
