"""R-LOG: auth and audit logs forwarded over TLS; every sender heard at the log host."""

from baomi.checks.conftest import control_checks

test_check = control_checks("log_forwarding")
