"""R-SEC 防火墙: nftables default-deny inbound except SSH and the allowed services."""

from baomi.checks.conftest import control_checks

test_check = control_checks("firewall")
