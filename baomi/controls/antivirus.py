"""R-SEC 病毒防护: ClamAV on every host, fed from the controller's private signature mirror.

What the policy wants (``antivirus``): ``clamd`` running with baomi's ``clamd.conf``;
on-access scanning of the host's sensitive paths with prevention (``clamonacc`` on fanotify);
a daily scan (systemd timer, or cron without systemd) by ``baomi-av-scan``
(:mod:`baomi.hostside.av_scan`), which moves infected files into a root-only quarantine
without ever following a link and writes each detection to a record this check reads.

Signatures: the hosts have no internet, so ``freshclam`` cannot run.  The deploy copies the
controller's mirror (``antivirus.mirror``: ClamAV's ``.cvd`` files, or databases of your own)
and always adds baomi's own hash signature of the EICAR test file (so detection can be proven
anywhere), with a manifest of each file's digest and build time; the check compares the files
with the manifest and the newest build time with ``max_signature_age_days``.

Where fanotify cannot be used (a container: ``fanotify_init`` needs CAP_SYS_ADMIN in the
initial user namespace, and seccomp filters such as systemd-nspawn's default refuse it)
``antivirus.on_access`` is not applicable, with the kernel's answer as the reason; the daily
scan still runs there.  Root is excluded from on-access prevention
(``OnAccessExcludeRootUID``): the scan that quarantines reads as root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from baomi.controls.backup import schedule
from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

INSTALLED = check("antivirus.installed", "clamscan, clamd and clamonacc are installed")
CONFIG = check("antivirus.config", "clamd.conf holds baomi's settings and the on-access paths")
DAEMON = check("antivirus.daemon", "clamav-daemon is enabled and running")
ON_ACCESS = check("antivirus.on_access", "clamonacc scans the sensitive paths on access")
SIGNATURES = check("antivirus.signatures", "the signature files are the mirror's, unaltered")
AGE = check("antivirus.signature_age", "the newest vendor signatures are recent enough")
SCHEDULE = check("antivirus.schedule", "the daily scan is scheduled (timer, or cron)")
QUARANTINE = check("antivirus.quarantine", "the quarantine is a folder only root can enter")
DETECTIONS = check("antivirus.detections", "no infected file found in the report window")
CHECKS = (INSTALLED, CONFIG, DAEMON, ON_ACCESS, SIGNATURES, AGE, SCHEDULE, QUARANTINE,
          DETECTIONS)
HEADER = "# Managed by baomi: R-SEC 病毒防护. Local edits are reverted.\n"

CLAMD_CONF = "/etc/clamav/clamd.conf"
DB_DIR = "/var/lib/clamav"
STATE_DIR = "/var/lib/baomi/antivirus"
MANIFEST = f"{STATE_DIR}/signatures.json"
DETECTIONS_LOG = f"{STATE_DIR}/detections.jsonl"
HELPER_PATH = "/usr/local/sbin/baomi-av-scan"
HELPER = "#!/usr/bin/python3 -I\n" + (Path(__file__).parents[1] / "hostside" / "av_scan.py"
                                       ).read_text(encoding="utf-8")
DAEMON_UNIT = "clamav-daemon"
ONACC_UNIT = "clamav-clamonacc"
DAEMON_DROPIN = "/etc/systemd/system/clamav-daemon.service.d/baomi.conf"
ONACC_DROPIN = "/etc/systemd/system/clamav-clamonacc.service.d/baomi.conf"
SERVICE_FILE = "/etc/systemd/system/baomi-av-scan.service"
TIMER_FILE = "/etc/systemd/system/baomi-av-scan.timer"
TIMER = "baomi-av-scan.timer"
CRON_FILE = "/etc/cron.d/baomi-av-scan"
SIGNATURE_SUFFIXES = (".cvd", ".cld", ".cud", ".hdb", ".hsb", ".ndb", ".ldb", ".mdb", ".msb")

# baomi's own signature: the MD5 and size of the EICAR test file (not a virus; every scanner
# reports it), so detection is proven offline without any vendor database.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
TEST_DB = "baomi-test.hdb"
TEST_SIGNATURE = "baomi.EICAR-Test-File"
TEST_DB_TEXT = f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{TEST_SIGNATURE}\n"  # noqa: S324

# clamd.conf, complete: Debian's defaults that matter plus on-access.  clamd runs as clamav;
# clamonacc passes it descriptors (--fdpass) so root-only files are scanned too.
BASE_SETTINGS = (
    ("LocalSocket", "/var/run/clamav/clamd.ctl"),
    ("FixStaleSocket", "true"),
    ("LocalSocketGroup", "clamav"),
    ("LocalSocketMode", "660"),
    ("User", "clamav"),
    ("DatabaseDirectory", DB_DIR),
    ("FollowDirectorySymlinks", "false"),
    ("FollowFileSymlinks", "false"),
    ("LogFile", "/var/log/clamav/clamav.log"),
    ("LogTime", "true"),
    ("LogSyslog", "true"),
    ("LogFacility", "LOG_AUTH"),
    ("Foreground", "false"),
    ("MaxThreads", "4"),
    ("SelfCheck", "3600"),
    ("ExtendedDetectionInfo", "true"),
    ("OnAccessPrevention", "yes"),
    ("OnAccessExcludeUname", "clamav"),
    ("OnAccessExcludeRootUID", "yes"),
)


@dataclass(frozen=True)
class Desired:
    enabled: bool
    paths: tuple[str, ...]            # the host's sensitive paths: scanned on access and daily
    on_access: bool
    clamd_conf: str
    mirror: str
    max_age_days: int
    report_days: int
    quarantine: str
    helper_args: str
    timer: str
    service: str
    cron: str


def clamd_conf(paths: tuple[str, ...], on_access: bool) -> str:
    lines = [f"{k} {v}" for k, v in BASE_SETTINGS]
    if on_access:
        lines += [f"OnAccessIncludePath {p}" for p in paths]
    return HEADER + "\n".join(lines) + "\n"


def desired(ctx: HostContext) -> Desired:
    a = ctx.policy.antivirus
    paths = tuple(p.path for p in ctx.policy.paths_for(set(ctx.groups)))
    on_calendar, cron_fields = schedule(1, "Sun", a.scan_time)
    args = " ".join(shlex.quote(x) for x in (a.quarantine_dir, DETECTIONS_LOG, DB_DIR, *paths))
    service = (HEADER + "[Unit]\nDescription=baomi R-SEC virus scan of the sensitive paths\n\n"
               f"[Service]\nType=oneshot\nExecStart={HELPER_PATH} {args}\n"
               "SuccessExitStatus=1\nNice=10\nIOSchedulingClass=idle\n")
    timer = (HEADER + "[Unit]\nDescription=baomi R-SEC daily virus scan\n\n"
             f"[Timer]\nOnCalendar={on_calendar}\nPersistent=true\n\n"
             "[Install]\nWantedBy=timers.target\n")
    cron = (HEADER + "SHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{cron_fields} root {HELPER_PATH} {args} >/dev/null 2>&1\n")
    return Desired(a.enabled, paths, a.on_access and bool(paths), clamd_conf(paths, a.on_access),
                   a.mirror, a.max_signature_age_days, a.report_days, a.quarantine_dir, args,
                   timer, service, cron)


def manifest(entries: list[tuple[str, str, int]]) -> str:
    """The manifest the deploy writes: {file name: {sha256, built (epoch seconds)}}."""
    return json.dumps({name: {"sha256": digest, "built": when} for name, digest, when in entries},
                      indent=1, sort_keys=True) + "\n"


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "antivirus.enabled is false in the policy"


# fanotify_init(FAN_CLASS_CONTENT, O_RDONLY): what clamonacc needs, asked of the kernel itself.
FANOTIFY_PROBE = ("python3 -c 'import ctypes,os;l=ctypes.CDLL(None,use_errno=True);"
                  "fd=l.fanotify_init(4,0);e=ctypes.get_errno();"
                  "print(\"ok\" if fd>=0 else os.strerror(e))'")


def observe_script(want: Desired) -> str:
    return script({
        "tools": "for t in clamscan clamd clamonacc; do command -v $t || echo missing $t; done",
        "conf": cat(CLAMD_CONF),
        "db": f"cd {DB_DIR} && for f in *; do [ -f \"$f\" ] && sha256sum -- \"$f\"; done",
        "manifest": cat(MANIFEST),
        "systemd": "[ -d /run/systemd/system ] && echo yes || echo no",
        "daemon": f"systemctl is-enabled {DAEMON_UNIT}; systemctl is-active {DAEMON_UNIT}",
        "onacc": f"systemctl is-enabled {ONACC_UNIT}; systemctl is-active {ONACC_UNIT}",
        "fanotify": FANOTIFY_PROBE,
        "helper": cat(HELPER_PATH),
        "timer": cat(TIMER_FILE),
        "service": cat(SERVICE_FILE),
        "timer_state": f"systemctl is-enabled {TIMER}; systemctl is-active {TIMER}",
        "cron": cat(CRON_FILE),
        "crond": "pgrep -x cron >/dev/null && echo running",
        "quarantine": f"stat -c '%a %U %F' {want.quarantine} 2>/dev/null || echo absent",
        "detections": f"tail -n 200 {DETECTIONS_LOG}",
        "now": "date +%s",
    })


@dataclass(frozen=True)
class Observed:
    missing_tools: tuple[str, ...]
    conf: str | None
    db: dict[str, str]                 # file name -> sha256
    manifest: dict[str, dict[str, object]] | None
    systemd: bool
    daemon: tuple[str, str]            # is-enabled, is-active
    onacc: tuple[str, str]
    fanotify: str                      # "ok" or the kernel's error
    helper: str | None
    timer: str | None
    service: str | None
    timer_state: tuple[str, str]
    cron: str | None
    crond: bool
    quarantine: str                    # "700 root directory", or stat's complaint
    detections: tuple[dict[str, object], ...]
    now: int


def _pair(text: str) -> tuple[str, str]:
    words = [*text.split(), "", ""]
    return words[0], words[1]


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out.strip() if s is not None else ""

    db = {}
    for line in raw("db").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            db[name] = digest
    try:
        manifest = json.loads(sec.text("manifest") or "null")
    except ValueError:
        manifest = {"<unreadable>": {}}
    detections = []
    for line in raw("detections").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            detections.append(item)
    now = raw("now")
    return Observed(
        missing_tools=tuple(line.split()[1] for line in raw("tools").splitlines()
                            if line.startswith("missing ")),
        conf=sec.text("conf"), db=db,
        manifest=manifest if isinstance(manifest, dict) else None,
        systemd=raw("systemd") == "yes",
        daemon=_pair(raw("daemon")), onacc=_pair(raw("onacc")),
        fanotify=raw("fanotify") or "no answer",
        helper=sec.text("helper"), timer=sec.text("timer"), service=sec.text("service"),
        timer_state=_pair(raw("timer_state")), cron=sec.text("cron"),
        crond=raw("crond") == "running", quarantine=raw("quarantine"),
        detections=tuple(detections), now=int(now) if now.isdigit() else 0)


def settings(conf: str) -> list[tuple[str, str]]:
    out = []
    for line in conf.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((key, value.strip()))
    return out


def _config(want: Desired, seen: Observed) -> list[Finding]:
    if seen.missing_tools:
        return [INSTALLED.finding("clamav, clamav-daemon", "installed",
                                  "missing " + ", ".join(seen.missing_tools), "critical")]
    if seen.conf is None:
        return [CONFIG.finding(CLAMD_CONF, "baomi's settings", "missing", "critical")]
    have, need = settings(seen.conf), settings(want.clamd_conf)
    if not seen.conf.startswith(HEADER):
        missing = [k for k, v in need if (k, v) not in have]
        return [CONFIG.finding(CLAMD_CONF, "baomi's settings", "another file (settings not "
                               f"as baomi's: {', '.join(dict.fromkeys(missing))})", "high")]
    out = [CONFIG.finding(CLAMD_CONF, f"{k} {v}", "absent") for k, v in need if (k, v) not in have]
    out += [CONFIG.finding(CLAMD_CONF, "no setting beyond baomi's", f"{k} {v}", "medium")
            for k, v in have if (k, v) not in need]
    return out


def _services(want: Desired, seen: Observed) -> list[Finding]:
    out = []
    if seen.systemd and seen.daemon != ("enabled", "active"):
        out.append(DAEMON.finding(f"systemctl {DAEMON_UNIT}", "enabled active",
                                  " ".join(seen.daemon) or "no answer", "critical"))
    if want.on_access and seen.systemd and seen.fanotify == "ok" \
            and seen.onacc != ("enabled", "active"):
        out.append(ON_ACCESS.finding(f"systemctl {ONACC_UNIT}", "enabled active",
                                     " ".join(seen.onacc) or "no answer", "critical"))
    if seen.systemd:
        for path, text, need in ((TIMER_FILE, seen.timer, want.timer),
                                 (SERVICE_FILE, seen.service, want.service)):
            if text != need:
                out.append(SCHEDULE.finding(path, "baomi's unit",
                                            "missing" if text is None else "edited"))
        if seen.timer_state != ("enabled", "active"):
            out.append(SCHEDULE.finding(TIMER, "enabled active", " ".join(seen.timer_state)))
    else:
        if seen.cron != want.cron:
            out.append(SCHEDULE.finding(CRON_FILE, "baomi's daily scan line",
                                        "missing" if seen.cron is None else "edited"))
        if not seen.crond:
            out.append(SCHEDULE.finding("cron", "running", "not running"))
    if seen.helper != HELPER:
        out.append(SCHEDULE.finding(HELPER_PATH, "baomi's scan program",
                                    "missing" if seen.helper is None else "edited", "critical"))
    if seen.quarantine != "700 root directory":
        out.append(QUARANTINE.finding(want.quarantine, "700 root directory",
                                      seen.quarantine or "absent"))
    return out


def built(entry: dict[str, object]) -> int:
    value = entry.get("built", 0)
    return value if isinstance(value, int) else 0


def _signatures(want: Desired, seen: Observed) -> list[Finding]:
    if seen.manifest is None:
        return [SIGNATURES.finding(MANIFEST, "the mirror's manifest", "missing", "critical")]
    out = []
    for name, entry in sorted(seen.manifest.items()):
        have = seen.db.get(name)
        if have != entry.get("sha256"):
            out.append(SIGNATURES.finding(f"{DB_DIR}/{name}", f"sha256 {entry.get('sha256')}",
                                          "missing" if have is None else f"sha256 {have}"))
    if TEST_DB not in seen.manifest:
        out.append(SIGNATURES.finding(f"{DB_DIR}/{TEST_DB}", "baomi's EICAR test signature",
                                      "not in the manifest"))
    vendor = {n: built(e) for n, e in seen.manifest.items() if n != TEST_DB}
    if want.mirror and not vendor:
        out.append(AGE.finding(DB_DIR, "signatures from the mirror", "none installed",
                               "critical"))
    elif vendor:
        name, newest = max(vendor.items(), key=lambda kv: kv[1])
        age = (seen.now - newest) / 86_400
        if age > want.max_age_days:
            out.append(AGE.finding(f"{DB_DIR}/{name}", f"built within {want.max_age_days} days",
                                   f"built {age:.1f} days ago", "high"))
    return out


def detection_findings(detections: Iterable[dict[str, object]], now: int,
                       report_days: int) -> list[Finding]:
    """One critical finding per detection of the last REPORT_DAYS (a line of the scan's
    record): the check's, and the agent's when it ships a new line (agent/detections.py)."""
    out = []
    since = now - report_days * 86_400
    for d in detections:
        when = d.get("time")
        if not isinstance(when, int) or isinstance(when, bool) or when < since:
            continue
        try:
            stamp = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        except (OverflowError, OSError, ValueError):
            continue
        found = (f"{d.get('signature')} at {stamp}: {d.get('action')}"
                 + (f" as {d.get('quarantine')}" if d.get("quarantine") else "")
                 + (f" ({d.get('reason')})" if d.get("reason") else ""))
        out.append(DETECTIONS.finding(str(d.get("path") or "<unresolved name>"), "no infection",
                                      found, "critical", sha256=d.get("sha256"),
                                      uid=d.get("uid")))
    return out


def _detections(want: Desired, seen: Observed) -> list[Finding]:
    return detection_findings(seen.detections, seen.now, want.report_days)


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return (_config(want, seen) + _services(want, seen) + _signatures(want, seen)
            + _detections(want, seen))


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    reasons = {}
    if not seen.systemd:
        reasons[DAEMON.id] = ("no systemd on this host to keep clamd running; the daily scan "
                              "(clamscan from cron) protects it")
    if not want.on_access:
        reasons[ON_ACCESS.id] = ("antivirus.on_access is false" if want.paths else
                                 "no sensitive path for this host's groups")
    elif seen.fanotify != "ok":
        reasons[ON_ACCESS.id] = (f"fanotify unavailable here (fanotify_init: {seen.fanotify}; "
                                 "a container without CAP_SYS_ADMIN in the initial user "
                                 "namespace, or whose seccomp filter refuses fanotify): the "
                                 "daily scan protects this host")
    elif not seen.systemd:
        reasons[ON_ACCESS.id] = "no systemd on this host to run clamonacc"
    if not want.mirror:
        reasons[AGE.id] = ("antivirus.mirror is not set: only baomi's EICAR test signature is "
                           "installed, there are no vendor signatures to age")
    return reasons


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    names = ", ".join(sorted(seen.manifest or {}))
    return {SIGNATURES.id: f"{DB_DIR}: {names}",
            ON_ACCESS.id: f"OnAccessIncludePath {' '.join(want.paths)}; fanotify {seen.fanotify}"}


CONTROL: Control[Desired, Observed] = Control(
    "antivirus", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
