"""R-ACL 最小权限, R-CLS 密级分类: sensitive paths owned and no looser than their level, marked.

One test per check: sensitive_paths.directory, .ownership, .file_mode (R-ACL) and .mark (R-CLS).
"""

from baomi.checks.conftest import control_checks

test_check = control_checks("sensitive_paths")
