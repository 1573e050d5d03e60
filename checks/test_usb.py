"""R-USB 外部存储设备, R-DEV 禁存个人设备: usb-storage/uas refused, USBGuard allow-list in force."""

from baomi.checks.conftest import control_checks

test_check = control_checks("usb")
