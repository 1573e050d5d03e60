"""Login throttling: failed logins counted per user and per source address, with a lockout.

Why in the database: several collector processes may serve one PostgreSQL database (scale
out); a counter in one process' memory would give a password guesser N times the tries. Two
keys per attempt (``user:NAME`` and ``addr:IP``): the user's limit stops a slow guesser
spread over many addresses, the address's limit stops one address trying many users. A
locked key answers 429 with ``Retry-After`` before the password is even checked (no scrypt
work for a locked attacker). A success clears the user's counter, not the address's (one
valid account must not reset a guesser's budget). Known trade-off: an attacker can lock a
named user out for ``lockout_seconds``; an `it` user can still log in from elsewhere only
after that time, so the lockout is kept short (15 min by default).

Every failed login and every lockout is a line of the hash-chained log (:mod:`.auditlog`,
R-LOG/R-AUD), in the transaction that counts it: ``login.failed`` with the source address and
the user name when such a user exists (a name that is no user is recorded as unknown with its
length only: people type their password into the user field), ``login.locked`` with the key
locked and for how long. The log cannot be flooded faster than the password check allows
(scrypt per attempt, none while locked: a locked attempt is refused before it, and not logged).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from baomi.collector import auditlog, credentials, store
from baomi.collector.config import Config
from baomi.collector.db import Database, Tx


@dataclass(frozen=True)
class Limits:
    per_user: int = 5  # failures per user within window_seconds
    per_address: int = 20  # failures per source address within window_seconds
    window_seconds: float = 900.0
    lockout_seconds: float = 900.0


class Locked(Exception):
    """Too many failed logins: the one-line reason and the seconds to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def keys(user: str, address: str) -> tuple[str, str]:
    return f"user:{user[:64]}", f"addr:{address[:64]}"


def check(tx: Tx, user: str, address: str, now: float) -> None:
    """Raise :class:`Locked` when the user or the address is locked out now."""
    for key in keys(user, address):
        row = tx.one("SELECT locked_until FROM login_failures WHERE key = ?", (key,))
        if row and row[0] is not None and row[0] > now:
            kind, _, name = key.partition(":")
            what = f"user {name!r}" if kind == "user" else f"address {name}"
            raise Locked(f"too many failed logins for {what}; try again in "
                         f"{int(row[0] - now) + 1} s", row[0] - now)


ACTOR = "-"  # a failed login has no authenticated actor
ROLE = "-"


def printable(text: str, limit: int = 64) -> str:
    """TEXT cut to LIMIT characters, anything not printable escaped (it reaches terminals)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])


def failed(tx: Tx, user: str, address: str, limits: Limits, now: float,
           known: bool = True) -> None:
    """Count one failure under both keys, lock a key that reached its limit; log both.
    KNOWN: whether USER is a user of the collector (else only its length is logged)."""
    who = {"user": printable(user)} if known else {"unknown_user_length": len(user)}
    auditlog.append(tx, ACTOR, ROLE, "login.failed", {**who, "from": printable(address)})
    for key, limit in zip(keys(user, address), (limits.per_user, limits.per_address),
                          strict=True):
        tx.run("INSERT INTO login_failures (key, failures, since) VALUES (?, 1, ?) "
               "ON CONFLICT (key) DO UPDATE SET "
               "failures = CASE WHEN ? - login_failures.since > ? THEN 1 "
               "ELSE login_failures.failures + 1 END, "
               "since = CASE WHEN ? - login_failures.since > ? THEN excluded.since "
               "ELSE login_failures.since END",
               (key, now, now, limits.window_seconds, now, limits.window_seconds))
        row = tx.one("SELECT failures FROM login_failures WHERE key = ?", (key,))
        failures = int(row[0]) if row else 1
        if failures >= limit:
            tx.run("UPDATE login_failures SET locked_until = ?, failures = 0, since = ? "
                   "WHERE key = ?", (now + limits.lockout_seconds, now, key))
            kind, _, name = key.partition(":")
            locked = ({"user": printable(name)} if known else {"unknown_user_length": len(user)}
                      ) if kind == "user" else {"from": printable(name)}
            auditlog.append(tx, ACTOR, ROLE, "login.locked",
                            {**locked, "failures": failures,
                             "seconds": int(limits.lockout_seconds)})


def succeeded(tx: Tx, user: str) -> None:
    tx.run("DELETE FROM login_failures WHERE key = ?", (f"user:{user[:64]}",))


def limits_of(config: Config) -> Limits:
    return Limits(per_user=config.login_max_failures_per_user,
                  per_address=config.login_max_failures_per_address,
                  window_seconds=float(config.login_lockout_seconds),
                  lockout_seconds=float(config.login_lockout_seconds))


async def attempt(database: Database, limits: Limits, user: str, password: str,
                  address: str) -> str | None:
    """One login attempt, throttled: the user's role, or None for a wrong user or password
    (counted); :class:`Locked` when the user or the address is locked out. Every login form
    (the API's, the dashboard's) goes through here so a guesser cannot pick the unthrottled
    one."""
    await database.read(lambda tx: check(tx, user, address, time.time()))
    found = await database.read(lambda tx: store.user_hash(tx, user))
    stored, role = found if found else (credentials.DUMMY, "")
    ok = await asyncio.get_running_loop().run_in_executor(
        None, credentials.check_password, password, stored)
    if not ok or not found:
        await database.write(lambda tx: failed(tx, user, address, limits, time.time(),
                                               known=found is not None))
        return None
    await database.write(lambda tx: succeeded(tx, user))
    return role
