"""Programs that run on managed hosts, shipped as text (never imported by the controller).

Kept out of ``baomi/controls`` (pure functions only): they run commands and write files on
the host they are installed on.
"""
