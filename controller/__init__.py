"""The controller room: what the administrator's machine runs around the pyinfra deploys.

``runner`` runs a deploy of ``baomi.deploy`` through pyinfra as a child process and reads its
result; ``escrow`` is the encrypted store of recovery secrets; ``commands/`` holds the click
commands ``baomi apply``, ``account``, ``backup``, ``escrow`` and ``offboard``, which the front
door (``baomi.cli``) loads by name, on demand.  Nothing here imports the front door: shared
command helpers live in ``baomi.ui``.
"""
