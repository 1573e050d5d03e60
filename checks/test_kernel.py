"""R-SEC 入侵检测: the policy's kernel settings (sysctl.d; live values on hosts with their
own kernel) and uncommon network protocols refused."""

from baomi.checks.conftest import control_checks

test_check = control_checks("kernel")
