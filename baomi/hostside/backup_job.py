#!/usr/bin/python3
# Managed by baomi: R-BAK 每周二次备份. Local edits are reverted.
"""baomi-backup: the weekly restic job and its read-only verification, on the host.

    baomi-backup run        refuses when a path that must be a mount point is not one; else
                            backup, periodic check, restore test (a failed one fails the run);
                            writes the status file atomically (the check and agent read it)
    baomi-backup verify     read-only: snapshots, restic check, restore test (prints JSON)
    baomi-backup prune CFG  on the host that holds a repository (the operator's `baomi backup
                            prune`): refuses when the newest snapshot collapsed against the one
                            before, else forget --keep-last --keep-monthly --prune

The job never forgets: a client's repository on the backup host is append-only.
Reads CONFIG (written by the deploy).  The repository password is only ever in PASSWORD_FILE
(0600), handed to restic as --password-file, never on a command line or in a log.
This file is the single source: baomi installs it and the check runs the same text.
"""

import datetime as dt
import errno
import hashlib
import json
import os
import pwd
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

CONFIG = "/etc/baomi/backup/config.json"
STATUS = "/var/lib/baomi/backup-status.json"
CHECK_READ = "64M"  # data read by each restic check (a random subset of packs; all if smaller)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def restic(cfg: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["restic", "--repo", cfg["repository"], "--password-file", cfg["password_file"],
           "--no-cache"]
    if cfg.get("rclone_program"):
        cmd += ["-o", "rclone.program=" + cfg["rclone_program"],
                "-o", "rclone.args=" + cfg["rclone_args"]]
    env = dict(os.environ, RESTIC_PROGRESS_FPS="0.0001")
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [x.strip() for x in (proc.stderr + "\n" + proc.stdout).splitlines() if x.strip()]
    marks = ("error", "does not match", "panic", "invalid", "wrong password", "fatal")
    telling = [x for x in lines if any(m in x.lower() for m in marks)]
    first = [x for x in telling if not x.startswith("Fatal: repository contains errors")]
    return ((first or telling or lines or [f"exit {proc.returncode}"])[0])[:300]


def snapshots(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = restic(cfg, "snapshots", "--json")
    if proc.returncode != 0:
        return {"ok": False, "error": error_line(proc), "snapshots": []}
    items = json.loads(proc.stdout or "[]") or []
    return {"ok": True, "snapshots": [{"id": s["short_id"], "time": s["time"],
                                       "paths": s.get("paths", [])} for s in items]}


def check(cfg: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    proc = restic(cfg, "check", "--read-data-subset", CHECK_READ)
    return {"time": now(), "exit": proc.returncode,
            "seconds": round(time.monotonic() - started, 2),
            "error": "" if proc.returncode == 0 else error_line(proc)}


def restore_test(cfg: dict[str, Any], snapshot: str) -> dict[str, Any]:
    """Restore a sample of the snapshot's files to a temporary place, compare, remove it."""
    started = time.monotonic()
    mismatches: list[dict[str, str]] = []
    out: dict[str, Any] = {"time": now(), "snapshot": snapshot, "sample": 0, "matched": 0,
                           "bytes": 0, "mismatches": mismatches, "error": ""}
    listing = restic(cfg, "ls", "--json", snapshot)
    if listing.returncode != 0:
        out["error"] = "restic ls: " + error_line(listing)
        return out
    files = []
    for line in listing.stdout.splitlines():
        node = json.loads(line)
        if node.get("struct_type") == "node" and node.get("type") == "file":
            files.append(node)
    want = int(cfg.get("restore_sample_files", 5))
    sample = random.sample(files, min(want, len(files)))
    out["sample"] = len(sample)
    if not sample:
        out["error"] = "the snapshot holds no files"
        return out
    try:
        target = tempfile.mkdtemp(prefix="restore-", dir=private_dir(cfg))
    except OSError as exc:
        out["error"] = f"no private place to restore into: {exc}"
        return out
    try:
        args = ["restore", snapshot, "--target", target]
        for node in sample:
            args += ["--include", node["path"]]
        proc = restic(cfg, *args)
        if proc.returncode != 0:
            out["error"] = "restic restore: " + error_line(proc)
        for node in sample:
            restored = target + node["path"]
            try:
                with open(restored, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                size = os.path.getsize(restored)
            except OSError as exc:
                mismatches.append({"path": node["path"], "why": f"not restored: {exc.strerror}"})
                continue
            why = ""
            if size != node.get("size", 0):
                why = f"size {size}, snapshot says {node.get('size', 0)}"
            else:
                why = compare_live(node, digest)
            if why:
                mismatches.append({"path": node["path"], "why": why})
            else:
                out["matched"] += 1
                out["bytes"] += size
    finally:
        shutil.rmtree(target, ignore_errors=True)
    out["removed"] = not os.path.exists(target)
    out["seconds"] = round(time.monotonic() - started, 2)
    return out


def private_dir(cfg: dict[str, Any]) -> str:
    """The job's own folder for restored samples (customer data): root's, mode 0700, never a
    link, so no other user sees a sample while it is compared (never /var/tmp)."""
    path = cfg.get("state_dir") or "/var/lib/baomi/backup"
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
        raise OSError(errno.EPERM, f"{path} is not a root-only folder (mode "
                      f"{stat.S_IMODE(st.st_mode):o}, uid {st.st_uid}, "
                      f"{'folder' if stat.S_ISDIR(st.st_mode) else 'not a folder'})")
    return path


def unmounted(cfg: dict[str, Any]) -> list[str]:
    """Paths that must be mount points and are not (their volume did not come up)."""
    return [p for p in cfg.get("mount_points", []) if not os.path.ismount(p)]


def compare_live(node: dict[str, Any], digest: str) -> str:
    """The restored copy against the original where it has not changed since the snapshot."""
    try:
        st = os.stat(node["path"])
        if st.st_size != node.get("size") or int(st.st_mtime) != epoch(node["mtime"]):
            return ""  # changed (or gone) since the snapshot: the size check is all we can do
        with open(node["path"], "rb") as handle:
            live = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""
    return "" if live == digest else (
        f"sha256 {digest[:12]}… differs from the original {live[:12]}…")


def epoch(stamp: str) -> int:
    base = stamp[:19]  # 2024-01-01T02:00:00 (restic's nanoseconds and zone follow)
    seconds = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    zone = stamp[19:].lstrip("0123456789.")
    offset = dt.timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return int((seconds - offset).replace(tzinfo=dt.UTC).timestamp())


def write_status(status: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(STATUS), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(STATUS), prefix=".backup-status.")
    with os.fdopen(fd, "w") as handle:
        json.dump(status, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, STATUS)


def previous_status() -> dict[str, Any]:
    try:
        with open(STATUS) as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run(cfg: dict[str, Any]) -> int:
    started = time.monotonic()
    status: dict[str, Any] = {"time": now(), "snapshot": "", "files": 0, "bytes": 0,
                              "exit": 1, "error": ""}
    last = previous_status()
    paths = [p for p in cfg["paths"] if os.path.exists(p)]
    missing = unmounted(cfg)
    if missing:
        status["error"] = (f"{', '.join(missing)} is not a mount point (its volume did not "
                           "mount?): refusing to back up an empty folder as the data")
    elif not paths:
        status["error"] = "none of the paths exist: " + " ".join(cfg["paths"])
    else:
        code, line = ensure_repository(cfg)
        if code != 0:
            status["error"] = line
    if not status["error"]:
        args = ["backup", "--json", "--host", cfg["host"]]
        for pattern in cfg.get("exclude", []):
            args += ["--exclude", pattern]
        proc = restic(cfg, *args, *paths)
        status["exit"] = proc.returncode
        for line in proc.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("message_type") == "summary":
                status["snapshot"] = msg.get("snapshot_id", "")
                status["files"] = msg.get("total_files_processed", 0)
                status["bytes"] = msg.get("total_bytes_processed", 0)
        if proc.returncode not in (0, 3):  # 3: some source files could not be read
            status["error"] = "restic backup: " + error_line(proc)
    status["duration_seconds"] = round(time.monotonic() - started, 2)
    if status["snapshot"]:
        status["check"] = last.get("check", {})
        due = time.time() - epoch(status["check"].get("time", "1970-01-01T00:00:00Z"))
        if due >= int(cfg["check_every_days"]) * 86400 - 3600 or status["check"].get("exit"):
            status["check"] = check(cfg)
        restored = restore_test(cfg, status["snapshot"])
        status["restore_test"] = restored
        failure = restore_failure(restored)
        if failure and not status["error"]:
            status["error"] = "restore test: " + failure
            status["exit"] = status["exit"] or 1
    write_status(status)
    print(json.dumps(status, sort_keys=True))
    return 0 if status["snapshot"] and not status["error"] else 1


def restore_failure(result: dict[str, Any]) -> str:
    """Why a restore test failed ("" when every sampled file came back equal)."""
    problems = [f"{m['path']}: {m['why']}" for m in result.get("mismatches", [])][:3]
    if result.get("error") or problems:
        return "; ".join(filter(None, [result.get("error", ""), *problems]))[:300]
    return "" if result.get("matched") else "nothing restored"


def verify(cfg: dict[str, Any]) -> int:
    """Read-only (for the repository and the host): what the compliance check looks at."""
    out = snapshots(cfg)
    if out["ok"] and out["snapshots"]:
        newest = max(out["snapshots"], key=lambda s: epoch(s["time"]))
        out["check"] = check(cfg)
        out["restore_test"] = restore_test(cfg, newest["id"])
    print(json.dumps(out, sort_keys=True))
    return 0


# What restic prints when the repository is really not there (as opposed to a connection the
# backup host dropped: its sshd refuses connections beyond MaxStartups when a fleet's clients
# all arrive at once, measured with 12 clients applying together).
NO_REPOSITORY = "Is there a repository at the following location?"


def repository_opens(cfg: dict[str, Any], attempts: int = 4) -> bool:
    """Whether the repository's config can be read; a failure that is not "no repository
    there" is retried with backoff and jitter, so a dropped connection never reads as "missing"
    (which would make the caller run `restic init` on a repository that exists)."""
    for attempt in range(attempts):
        proc = restic(cfg, "cat", "config")
        if proc.returncode == 0:
            return True
        if NO_REPOSITORY in proc.stderr or attempt == attempts - 1:
            return False
        time.sleep(2 ** attempt + random.random())  # noqa: S311 - jitter, not a secret
    return False


def ensure_repository(cfg: dict[str, Any], attempts: int = 4) -> tuple[int, str]:
    """Create the repository unless it opens already (restic init refuses an existing one):
    the exit code and what happened, in a line.  `restic init` runs only when restic says no
    repository is there; a dropped connection is retried with backoff and jitter (an init whose
    answer was lost shows up as "opens" on the next round)."""
    last: subprocess.CompletedProcess[str] | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(2 ** (attempt - 1) + random.random())  # noqa: S311 - jitter
        probe = restic(cfg, "cat", "config")
        if probe.returncode == 0:
            return 0, "repository opens"
        last = probe
        if NO_REPOSITORY in probe.stderr:
            last = restic(cfg, "init")
            if last.returncode == 0:
                return 0, "restic init: created"
    assert last is not None  # noqa: S101 - attempts >= 1
    return last.returncode or 1, "restic init: " + error_line(last)


def init(cfg: dict[str, Any]) -> int:
    code, line = ensure_repository(cfg)
    print(line)
    return code


def as_account(cfg: dict[str, Any], password: str, *args: str
               ) -> subprocess.CompletedProcess[str]:
    """restic on the local repository as the account that owns it (files it writes stay the
    account's), the password through a pipe given to the account (restic reopens it as
    /dev/stdin): never on a command line, in the environment or in a file it could open."""
    cmd = ["restic", "--repo", cfg["repository"], "--password-file", "/dev/stdin", "--no-cache",
           *args]
    if cfg["account"] != "root":
        cmd = ["runuser", "-u", cfg["account"], "--", *cmd]
    env = dict(os.environ, RESTIC_PROGRESS_FPS="0.0001", HOME="/nonexistent")
    read, write = os.pipe()
    try:
        os.fchown(read, pwd.getpwnam(cfg["account"]).pw_uid, -1)
        os.write(write, password.encode())
        os.close(write)
        write = -1
        return subprocess.run(cmd, stdin=read, capture_output=True, text=True, env=env)
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


def repository_problem(cfg: dict[str, Any]) -> str:
    """Re-checked right before forgetting: the repository is a real folder (no link anywhere
    on it) owned by its account, holding a restic config file."""
    path = cfg["repository"]
    if not path.startswith("/") or os.path.realpath(path) != os.path.normpath(path):
        return f"{path} is not a plain absolute path (a link on the way?)"
    try:
        st = os.lstat(path)
        owner = pwd.getpwnam(cfg["account"]).pw_uid
    except (OSError, KeyError) as exc:
        return f"{path} or account {cfg['account']}: {exc}"
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner:
        return f"{path} is not a folder owned by {cfg['account']}"
    if not stat.S_ISREG(os.lstat(os.path.join(path, "config")).st_mode):
        return f"{path}/config is not a regular file"
    return ""


def sizes(cfg: dict[str, Any], password: str, snapshot: str) -> tuple[int, int]:
    proc = as_account(cfg, password, "stats", "--json", "--mode", "restore-size", snapshot)
    if proc.returncode != 0:
        raise RuntimeError(f"restic stats {snapshot}: {error_line(proc)}")
    found = json.loads(proc.stdout)
    return int(found.get("total_file_count", 0)), int(found.get("total_size", 0))


def collapse(cfg: dict[str, Any], password: str, items: list[dict[str, Any]]) -> str:
    """Why forgetting is refused: in a snapshot group, the newest snapshot holds less than
    min_percent of the files or bytes of the one before (an unmounted volume, lost data)."""
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for item in items:
        key = (item.get("hostname", ""), tuple(sorted(item.get("paths", []))))
        groups.setdefault(key, []).append(item)
    limit = int(cfg["min_percent"])
    for group in groups.values():
        if len(group) < 2:
            continue
        before, newest = sorted(group, key=lambda i: epoch(i["time"]))[-2:]
        (files, size), (old_files, old_size) = (sizes(cfg, password, newest["id"]),
                                                sizes(cfg, password, before["id"]))
        if files * 100 < old_files * limit or size * 100 < old_size * limit:
            return (f"snapshot {newest['short_id']} holds {files} of the {old_files} files "
                    f"and folders ({size} of {old_size} bytes) of snapshot "
                    f"{before['short_id']}, below "
                    f"{limit}%: a volume not mounted, or data lost? not forgetting")
    return ""


def prune(cfg: dict[str, Any]) -> int:
    """forget --keep-last --keep-monthly --prune, unless the newest snapshot collapsed."""
    out: dict[str, Any] = {"host": cfg["host"], "repository": cfg["repository"], "ok": False}
    try:
        with open(cfg["password_file"]) as handle:
            password = handle.read().strip()
        problem = repository_problem(cfg)
        listing = None if problem else as_account(cfg, password, "snapshots", "--json")
        if listing is not None and listing.returncode != 0:
            problem = "restic snapshots: " + error_line(listing)
        items = (json.loads(listing.stdout or "[]") or []) if listing is not None else []
        problem = problem or collapse(cfg, password, items)
        if not problem:
            as_account(cfg, password, "unlock")
            forget = as_account(cfg, password, "forget", "--keep-last", str(cfg["keep_last"]),
                                "--keep-monthly", str(cfg["keep_monthly"]), "--prune")
            problem = "" if forget.returncode == 0 else "restic forget: " + error_line(forget)
            after = as_account(cfg, password, "snapshots", "--json")
            out["kept"] = len(json.loads(after.stdout or "[]") or [])
            out["forgotten"] = len(items) - out["kept"]
    except (OSError, ValueError, RuntimeError) as exc:
        problem = str(exc)
    if problem:  # one line: what the operator sees
        sys.stderr.write(f"{cfg['host']}: {problem}\n")
        return 1
    out["ok"] = True
    print(json.dumps(out, sort_keys=True))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[1] == "prune":
        return prune(json.loads(argv[2]))
    try:
        with open(argv[2] if len(argv) > 2 else CONFIG) as handle:
            cfg = json.load(handle)
    except (OSError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": f"config {CONFIG}: {exc}"}))
        return 2
    if len(argv) > 1 and argv[1] == "run":
        return run(cfg)
    if len(argv) > 1 and argv[1] == "verify":
        return verify(cfg)
    if len(argv) > 1 and argv[1] == "init":
        return init(cfg)
    if len(argv) > 1 and argv[1] == "snapshots":
        print(json.dumps(snapshots(cfg), sort_keys=True))
        return 0
    if len(argv) > 1 and argv[1] == "probe":
        return 0 if repository_opens(cfg) else 1
    sys.stderr.write("usage: baomi-backup run|verify|snapshots|init|probe [CONFIG] | "
                     "prune JSON\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
