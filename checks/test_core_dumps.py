"""R-ACL 访问控制, R-DST 彻底销毁: no core dumps (fs.suid_dumpable 0, hard core 0,
systemd-coredump stores nothing)."""

from baomi.checks.conftest import control_checks

test_check = control_checks("core_dumps")
