"""R-LOG 访问日志与操作审计: auth and audit logs leave the host over TLS, disk-queued.

Every host but the log host (``log_forwarding.host``, e.g. the collector's) runs rsyslog with
baomi's forwarding file: facilities auth/authpriv, the kernel audit log (``imfile`` on
``/var/log/audit/audit.log``) and rsyslog's own mark every 5 minutes go to one ``omfwd``
action over TLS (``gtls``; the log host's certificate must carry its name, issued by the CA
the controller makes) with a disk-assisted queue that keeps messages while the log host is
away and across restarts.  The log host runs the receiving side from the same deploy: TLS
only, clients must show a certificate of the same CA, one folder per sender address under
``/var/log/baomi-remote`` (0700).

The proof that logs arrive is on the receiving side: the deploy makes a folder for each sender
of the inventory, and ``log_forwarding.received`` fails for a sender whose newest message (the
marks make one every 5 minutes, the deploy logs a tagged line at once) is older than
:data:`SILENCE_MINUTES`, or that never sent anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

CONFIG = check("log_forwarding.config", "rsyslog holds baomi's forwarding (or receiving) file "
               "and accepts it")
CERTS = check("log_forwarding.certificates", "the host's certificate is from baomi's log CA; "
              "its key is root's alone")
RUNNING = check("log_forwarding.running", "rsyslogd is running")
TARGET = check("log_forwarding.target", "the log host's name resolves on the sender")
LISTENING = check("log_forwarding.listening", "the log host listens for TLS syslog")
RECEIVED = check("log_forwarding.received", "every sender's logs arrived recently")
CHECKS = (CONFIG, CERTS, RUNNING, TARGET, LISTENING, RECEIVED)
HEADER = "# Managed by baomi: R-LOG 访问日志与操作审计. Local edits are reverted.\n"

TLS_DIR = "/etc/baomi/logs"
CA_FILE = f"{TLS_DIR}/ca.pem"
CERT_FILE = f"{TLS_DIR}/host.pem"
KEY_FILE = f"{TLS_DIR}/host.key"
SEND_FILE = "/etc/rsyslog.d/60-baomi-forward.conf"
RECEIVE_FILE = "/etc/rsyslog.d/60-baomi-receive.conf"
REMOTE_DIR = "/var/log/baomi-remote"
REMOTE_LOG = "messages.log"
AUDIT_LOG = "/var/log/audit/audit.log"
MARK_SECONDS = 300
SILENCE_MINUTES = 15
STARTED_TAG = "baomi-log-forwarding"


@dataclass(frozen=True)
class Desired:
    enabled: bool
    configured: bool
    receiver: bool          # this host is the log host
    target: str
    port: int
    conf: str               # the role's rsyslog file
    conf_path: str


def _tls_globals() -> str:
    return (f'global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{CA_FILE}"\n'
            f'       DefaultNetstreamDriverCertFile="{CERT_FILE}" '
            f'DefaultNetstreamDriverKeyFile="{KEY_FILE}")\n')


def send_conf(target: str, port: int, queue_mb: int) -> str:
    return (HEADER + _tls_globals()
            + f'module(load="immark" interval="{MARK_SECONDS}")\n'
            'module(load="imfile")\n'
            'ruleset(name="baomi_forward") {\n'
            f'  action(type="omfwd" target="{target}" port="{port}" protocol="tcp"\n'
            '         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"\n'
            f'         StreamDriverPermittedPeers="{target}" action.writeAllMarkMessages="on"\n'
            '         queue.type="LinkedList" queue.filename="baomi_forward"\n'
            f'         queue.maxDiskSpace="{queue_mb}m" queue.saveOnShutdown="on"\n'
            '         action.resumeRetryCount="-1" action.resumeInterval="10")\n'
            '}\n'
            f'input(type="imfile" File="{AUDIT_LOG}" Tag="audit:" Facility="authpriv"\n'
            '      ruleset="baomi_forward")\n'
            'if $syslogfacility-text == "auth" or $syslogfacility-text == "authpriv" '
            'or $syslogfacility-text == "mark" then {\n'
            '  call baomi_forward\n'
            '}\n')


def receive_conf(port: int) -> str:
    return (HEADER + _tls_globals()
            + 'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"\n'
            '       StreamDriver.AuthMode="x509/certvalid")\n'
            'template(name="baomi_remote_file" type="string"\n'
            f'         string="{REMOTE_DIR}/%FROMHOST-IP:::secpath-replace%/{REMOTE_LOG}")\n'
            'ruleset(name="baomi_remote") {\n'
            '  action(type="omfile" dynaFile="baomi_remote_file" dirCreateMode="0700"\n'
            '         fileCreateMode="0600" fileOwner="root" fileGroup="root")\n'
            '}\n'
            f'input(type="imtcp" port="{port}" ruleset="baomi_remote")\n')


def desired(ctx: HostContext) -> Desired:
    lf = ctx.policy.log_forwarding
    receiver = bool(lf.host) and ctx.host == lf.host
    conf = receive_conf(lf.port) if receiver else send_conf(lf.host, lf.port, lf.queue_max_mb)
    return Desired(lf.enabled, bool(lf.host), receiver, lf.host, lf.port, conf,
                   RECEIVE_FILE if receiver else SEND_FILE)


def not_applicable(want: Desired) -> str | None:
    if not want.enabled:
        return "log_forwarding.enabled is false in the policy"
    if not want.configured:
        return ("log_forwarding.host is not set: name the log host (e.g. the collector) in "
                "the policy")
    return None


def observe_script(want: Desired) -> str:
    other = SEND_FILE if want.receiver else RECEIVE_FILE
    commands = {
        "conf": cat(want.conf_path),
        "other": cat(other),
        "modes": f"stat -c '%n %a %U' {CA_FILE} {CERT_FILE} {KEY_FILE}",
        "verify": f"openssl verify -CAfile {CA_FILE} {CERT_FILE}",
        "running": "pgrep -x rsyslogd >/dev/null && echo yes || echo no",
        "validate": "rsyslogd -N1 2>&1 | tail -n 5",
    }
    if want.receiver:
        commands["listening"] = f"ss -Hltn 'sport = :{want.port}'"
        commands["received"] = (f"now=$(date +%s); for d in {REMOTE_DIR}/*/; do "
                                 f"[ -d \"$d\" ] || continue; f=\"${{d}}{REMOTE_LOG}\"; "
                                 "t=$(stat -c %Y \"$f\" 2>/dev/null || echo never); "
                                 "echo \"$(basename \"$d\") $t $now\"; done")
    else:
        commands["resolve"] = f"getent hosts {want.target}"
    return script(commands)


@dataclass(frozen=True)
class Observed:
    conf: str | None
    other: str | None
    modes: dict[str, str]
    verify: str
    running: bool
    validate: tuple[int, str]
    listening: bool
    received: dict[str, int | None]   # sender address -> age in seconds, None: never
    resolves: str


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out.strip() if s is not None else ""

    modes = {}
    for line in raw("modes").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("/"):
            modes[fields[0]] = f"{fields[1]} {fields[2]}"
    received: dict[str, int | None] = {}
    for line in raw("received").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].isdigit():
            received[fields[0]] = int(fields[2]) - int(fields[1]) if fields[1].isdigit() \
                else None
    validate = sec.get("validate")
    return Observed(sec.text("conf"), sec.text("other"), modes, raw("verify"),
                    raw("running") == "yes",
                    (validate.rc if validate else 1, raw("validate")),
                    bool(raw("listening")), received, raw("resolve"))


def compare(want: Desired, seen: Observed) -> list[Finding]:
    out = []
    if seen.conf != want.conf:
        out.append(CONFIG.finding(want.conf_path, "baomi's file",
                                  "missing" if seen.conf is None else "edited", "critical"))
    if seen.other is not None:
        out.append(CONFIG.finding(SEND_FILE if want.receiver else RECEIVE_FILE,
                                  "absent (the other role's file)", "present"))
    if "error" in seen.validate[1].lower():
        out.append(CONFIG.finding("rsyslogd -N1", "no error", seen.validate[1][-300:]))
    for path, mode in ((CA_FILE, "644 root"), (CERT_FILE, "644 root"), (KEY_FILE, "600 root")):
        if seen.modes.get(path) != mode:
            out.append(CERTS.finding(path, mode, seen.modes.get(path, "missing")))
    if CERT_FILE in seen.modes and not seen.verify.endswith(": OK"):
        out.append(CERTS.finding(CERT_FILE, "issued by baomi's log CA", seen.verify[-200:]))
    if not seen.running:
        out.append(RUNNING.finding("rsyslogd", "running", "not running", "critical"))
    if want.receiver:
        if not seen.listening:
            out.append(LISTENING.finding(f"tcp port {want.port}", "listening", "closed",
                                         "critical"))
        if not seen.received:
            out.append(RECEIVED.finding(REMOTE_DIR, "a folder per sender", "none"))
        for sender, age in sorted(seen.received.items()):
            if age is None or age > SILENCE_MINUTES * 60:
                found = "nothing ever" if age is None else f"last message {age // 60} min ago"
                out.append(RECEIVED.finding(f"{REMOTE_DIR}/{sender}",
                                            f"a message within {SILENCE_MINUTES} min", found,
                                            "critical"))
    elif not seen.resolves:
        out.append(TARGET.finding(f"getent hosts {want.target}", "an address", "none"))
    return out


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    if want.receiver:
        return {TARGET.id: "this is the log host: it receives, it does not forward"}
    why = f"this host forwards to {want.target}; the log host's check sees what arrives"
    return {LISTENING.id: why, RECEIVED.id: why}


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    if not want.receiver:
        return {TARGET.id: f"{want.target}:{want.port} is {seen.resolves.split(' ')[0]}"}
    ages = ", ".join(f"{s} {'never' if a is None else f'{a}s ago'}"
                     for s, a in sorted(seen.received.items()))
    return {RECEIVED.id: ages}


CONTROL: Control[Desired, Observed] = Control(
    "log_forwarding", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
