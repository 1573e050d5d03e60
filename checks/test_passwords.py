"""R-PWD 密码策略: pam_pwquality length and classes, login.defs ageing, human accounts aged.

The observe script reads /etc/shadow on the host and prints only names, a password status and
the ageing fields: no password hash reaches the controller or this report.
"""

from baomi.checks.conftest import control_checks

test_check = control_checks("passwords")
