"""R-SEC 入侵检测: fail2ban bans SSH guessers per the policy."""

from baomi.checks.conftest import control_checks

test_check = control_checks("ssh_guard")
