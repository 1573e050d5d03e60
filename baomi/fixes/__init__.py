"""Fixes: the shell that *changes* a host, as pure functions returning text.

The rule (docs/architecture.md, "Reading and changing"): a control module in
``baomi/controls/`` only reads — desired, observe, parse, compare.  Every script that changes
a host (install a file, neutralise a line, lock an account, format a volume) lives here, one
module per control (``baomi.fixes.<control>``), and is still pure: it builds shell text from
desired and observed state and runs nothing.  The pyinfra deploys (``deploy/``) yield these
scripts as operations; the agent and the collector (which will run offboarding catch-up on a
host) reuse the same ones.  So the core holds fixes — they are the one implementation of
"how to make it so" — but never in the files an auditor reads to know "how it is checked".
"""
