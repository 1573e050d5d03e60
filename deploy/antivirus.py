"""R-SEC 病毒防护 on a host: ClamAV from the controller's signature mirror, on-access and daily
scans, the root-only quarantine (see :mod:`baomi.controls.antivirus`)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, cast

from pyinfra import host
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from baomi.controls import antivirus as core
from baomi.deploy.common import (
    Observation,
    context,
    nothing_to_do,
    op_name,
    put_text,
    refuse,
    shell_if,
    unit_enabled_and_active,
)
from baomi.fixes import antivirus as fix
from baomi.fixes.backup import CRON_RUNNING, START_CRON

C = core.CONTROL.name


def _built(path: Path) -> int:
    """A ClamAV container's own build time (its header), else the file's time in the mirror."""
    if path.suffix in (".cvd", ".cld", ".cud"):
        with path.open("rb") as f:
            fields = f.read(512).decode("ascii", "replace").split(":")
        if len(fields) > 2 and fields[0] == "ClamAV-VDB":
            try:
                return int(dt.datetime.strptime(fields[1], "%d %b %Y %H-%M %z").timestamp())
            except ValueError:
                pass
    return int(path.stat().st_mtime)


def mirror_files(mirror: str) -> tuple[list[Path], str]:
    """The signature databases in the controller's mirror, or why there are none."""
    if not mirror:
        return [], ""
    folder = Path(mirror)
    if not folder.is_dir():
        return [], f"antivirus.mirror {mirror}: not a folder on the controller"
    found = sorted(p for p in folder.iterdir() if p.suffix in core.SIGNATURE_SUFFIXES
                   and p.is_file() and p.name != core.TEST_DB)
    if not found:
        return [], (f"antivirus.mirror {mirror}: no ClamAV database in it "
                    f"({', '.join(core.SIGNATURE_SUFFIXES)})")
    return found, ""


def apply() -> None:
    want = core.desired(context())
    reason = core.not_applicable(want)
    if reason:
        nothing_to_do(name=op_name(C, "virus protection"), reason=reason)
        return
    apt.packages(name=op_name(C, "clamav packages"), packages=["clamav", "clamav-daemon"])
    files.directory(name=op_name(C, core.STATE_DIR), path=core.STATE_DIR, user="root",
                    group="root", mode="0700")
    vendor, problem = mirror_files(want.mirror)
    if problem:
        refuse(name=op_name(C, "signature mirror"), message=problem)
        return
    entries = [(core.TEST_DB, hashlib.sha256(core.TEST_DB_TEXT.encode()).hexdigest(),
                0)]
    changed = [put_text(C, f"{core.DB_DIR}/{core.TEST_DB}", core.TEST_DB_TEXT)]
    for path in vendor:
        data = path.read_bytes()
        entries.append((path.name, hashlib.sha256(data).hexdigest(), _built(path)))
        changed.append(files.put(name=op_name(C, f"{core.DB_DIR}/{path.name}"), src=str(path),
                                 dest=f"{core.DB_DIR}/{path.name}", user="root", group="root",
                                 mode="0644"))
    put_text(C, core.MANIFEST, core.manifest(entries), mode="0600")
    changed.append(put_text(C, core.CLAMD_CONF, want.clamd_conf))
    put_text(C, core.HELPER_PATH, core.HELPER, mode="0755")
    shell_if(name=op_name(C, f"quarantine {want.quarantine}"),
             check=f"[ \"$(stat -c '%a %U %F' {want.quarantine})\" = '700 root directory' ]",
             command=fix.quarantine_dir(want.quarantine), reason="root-only (700)")
    systemd = host.get_fact(Observation, script="[ -d /run/systemd/system ] && echo yes || echo no")
    if systemd.strip() != "yes":
        put_text(C, core.CRON_FILE, want.cron)
        shell_if(name=op_name(C, "cron daemon"), check=CRON_RUNNING, command=START_CRON,
                 reason="cron is running (no systemd on this host)")
        return
    changed.append(put_text(C, core.DAEMON_DROPIN, fix.DAEMON_DROPIN))
    shell_if(name=op_name(C, f"reload {core.DAEMON_UNIT}"), check="false",
             command=fix.RESTART_DAEMON, reason="", _if=any_changed(*cast(Any, changed)))
    unit_enabled_and_active(C, core.DAEMON_UNIT)
    onacc = put_text(C, core.ONACC_DROPIN, fix.ONACC_DROPIN)
    fanotify = host.get_fact(Observation, script=core.FANOTIFY_PROBE).strip()
    if not want.on_access:
        nothing_to_do(name=op_name(C, core.ONACC_UNIT),
                      reason="on-access scanning off (policy, or no sensitive path here)")
    elif fanotify != "ok":
        nothing_to_do(name=op_name(C, core.ONACC_UNIT),
                      reason=f"fanotify unavailable ({fanotify}): the daily scan protects "
                             "this host")
    else:
        shell_if(name=op_name(C, f"restart {core.ONACC_UNIT}"), check="false",
                 command=fix.START_ONACC, reason="", _if=any_changed(cast(Any, onacc)))
        unit_enabled_and_active(C, core.ONACC_UNIT)
    put_text(C, core.SERVICE_FILE, want.service)
    put_text(C, core.TIMER_FILE, want.timer)
    unit_enabled_and_active(C, core.TIMER)
