"""R-LOCK 开机与屏保密码: idle lock that users cannot override, TMOUT, sshd idle probes."""

from baomi.checks.conftest import control_checks

test_check = control_checks("screen_lock")
