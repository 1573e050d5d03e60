"""R-ACL default umask 027 (login.defs + pam_umask); R-PWD hashing method and cost
(login.defs + pam_unix)."""

from baomi.checks.conftest import control_checks

test_check = control_checks("login_defaults")
