"""Compliance checks (pytest-testinfra), one module per control, each test tagged with its clause.

    pytest checks --hosts=srv1,ws1 --ssh-config=LAB/ssh_config --inventory=LAB/inventory.py

Each check runs its control's read-only observe script on the host, parses it with the
control's pure parser and asserts that ``compare`` finds nothing; the assertion message is the
evidence (what was expected, what was found), never a secret.
"""
