"""R-LOG fixes: (re)start rsyslog, with systemd or without (a lab host's plain sshd world)."""

from __future__ import annotations

# rsyslog v8 reads its configuration only at start (SIGHUP just reopens files).
RESTART = ("if [ -d /run/systemd/system ]; then systemctl enable rsyslog && "
           "systemctl restart rsyslog; else "
           "if [ -s /run/rsyslogd.pid ]; then kill \"$(cat /run/rsyslogd.pid)\"; fi; "
           "i=0; while pgrep -x rsyslogd >/dev/null && [ $i -lt 50 ]; do sleep 0.1; "
           "i=$((i+1)); done; rsyslogd; fi")
START = ("if [ -d /run/systemd/system ]; then systemctl enable --now rsyslog; "
         "else rsyslogd; fi")
