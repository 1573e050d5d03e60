"""R-BAK 每周二次备份: setup, schedule, freshness, continuity, restic check and a sample restore.

One observation per host (it restores a sample of files, so it is not repeated per check);
each check records its evidence (snapshot ids, dates, sample) through the runner.
"""

from baomi.checks.conftest import control_checks

test_check = control_checks("backup")
