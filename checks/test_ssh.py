"""R-TLS 加密传输: sshd takes keys only, root at most by key, approved ciphers/MACs/KEX."""

from baomi.checks.conftest import control_checks

test_check = control_checks("ssh")
