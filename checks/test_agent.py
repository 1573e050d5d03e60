"""R-FIM/R-LOG: the resident agent is installed, runs (under systemd, or the supervisor on a
host without it: the finding says which), is enrolled with the policy's collector (credential
0600) and its heartbeat is fresh (the agent's own record of the collector's last answer).
Hosts of group ``collector``: not applicable."""

from baomi.checks.conftest import control_checks

test_check = control_checks("agent")
