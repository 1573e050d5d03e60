"""R-SEC 病毒防护 fixes: the quarantine folder, clamd's and clamonacc's unit drop-ins.

The quarantine is made by root in a root-only parent; a link planted at its name is removed
(itself, never followed) before the folder is made, and ownership is set with ``chown -h``.
"""

from __future__ import annotations

import shlex

from baomi.controls.antivirus import DAEMON_UNIT, HEADER, ONACC_UNIT, TIMER

# Debian's clamav-daemon.service starts only when the official main/daily databases exist;
# the hosts get the controller's mirror (or only baomi's test signature), so the condition
# is reset.  clamonacc: no --move to /root/quarantine (baomi-av-scan quarantines without
# following links), --fdpass so clamd (user clamav) can scan root-only files.
DAEMON_DROPIN = HEADER + "[Unit]\nConditionPathExistsGlob=\n"
ONACC_DROPIN = (HEADER + "[Service]\nExecStart=\nExecStart=/usr/sbin/clamonacc -F --fdpass "
                "--log=/var/log/clamav/clamonacc.log\n")
RESTART_DAEMON = (f"systemctl daemon-reload && systemctl enable {DAEMON_UNIT} && "
                  f"systemctl restart {DAEMON_UNIT}")
START_ONACC = (f"systemctl daemon-reload && systemctl enable {ONACC_UNIT} && "
               f"systemctl restart {ONACC_UNIT}")
START_TIMER = f"systemctl daemon-reload && systemctl enable --now {TIMER}"


def quarantine_dir(path: str) -> str:
    q = shlex.quote(path)
    return (f"if [ -L {q} ] || {{ [ -e {q} ] && [ ! -d {q} ]; }}; then rm -f -- {q}; fi; "
            f"mkdir -p -m 0700 -- {q} && chown -h root:root -- {q} && chmod 0700 -- {q}")
