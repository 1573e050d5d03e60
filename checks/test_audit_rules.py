"""R-LOG 访问日志与操作审计: kernel audit watches on the sensitive paths whose level needs them."""

from baomi.checks.conftest import control_checks

test_check = control_checks("audit_rules")
