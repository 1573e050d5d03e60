"""R-SEC 病毒防护: ClamAV, on-access and daily scans, quarantine, fresh signatures."""

from baomi.checks.conftest import control_checks

test_check = control_checks("antivirus")
