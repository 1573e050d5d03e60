"""R-ENC 加密存储: sensitive data on open LUKS mappings, the policy's volumes as LUKS2, and the
root filesystem of the groups in ``require_root_on`` encrypted.

A failure shows the evidence: path → mount → device chain (from findmnt -J, lsblk -J and
cryptsetup status).  The root filesystem is its own check (``disk_encryption.root_encrypted``),
so a fleet whose workstations cannot have an encrypted root yet shows exactly that finding.
"""

from baomi.checks.conftest import control_checks

test_check = control_checks("disk_encryption")
